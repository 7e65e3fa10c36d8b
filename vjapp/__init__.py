"""vjapp: real-time, audio-reactive StyleGAN visuals."""

__version__ = "0.1.0"
