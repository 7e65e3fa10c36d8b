"""Training data: synthscapes (our procedural audio-visual dataset) and the video loader.

* :mod:`training.data.synthscapes` — ``generate_clip`` / ``write_synthscapes`` and the
  ``vjapp-train synthscapes`` command; the nine scenes are in :mod:`.synth_scenes`, built from
  the sound primitives in :mod:`.synth_audio` and the picture primitives in :mod:`.synth_video`.
* :mod:`training.data.video_folder` — ``VideoClipIndex``, ``decode_clip`` and the torch datasets
  ``SequenceDataset``, ``FrameDataset``, ``AudioDataset`` over a folder tree or a CSV manifest.
"""

from .synthscapes import SynthClip, generate_clip, write_synthscapes
from .video_folder import (
    AudioDataset,
    ClipDecodeError,
    DatasetError,
    DecodedClip,
    FrameDataset,
    SequenceDataset,
    VideoClipIndex,
    decode_clip,
)

__all__ = [
    "AudioDataset",
    "ClipDecodeError",
    "DatasetError",
    "DecodedClip",
    "FrameDataset",
    "SequenceDataset",
    "SynthClip",
    "VideoClipIndex",
    "decode_clip",
    "generate_clip",
    "write_synthscapes",
]
