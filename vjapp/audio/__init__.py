"""Audio in: the ring buffer, file decoding and validation, and the sources that feed the ring
(synthetic signal, file player, live input). See DESIGN.md sections 2 and 6."""

from .decode import (
    AudioDecodeError,
    DecodedAudio,
    decode_audio,
    resample,
    to_mono,
    validate_samples,
)
from .live import LiveInput
from .player import FilePlayer
from .ring import ReadResult, RingBuffer
from .sources import (
    AudioBackendError,
    AudioSource,
    InputDeviceInfo,
    SourceStatus,
    list_input_devices,
    list_output_devices,
)
from .synth import Segment, SyntheticSource, render_segments

__all__ = [
    "AudioBackendError",
    "AudioDecodeError",
    "AudioSource",
    "DecodedAudio",
    "FilePlayer",
    "InputDeviceInfo",
    "LiveInput",
    "ReadResult",
    "RingBuffer",
    "Segment",
    "SourceStatus",
    "SyntheticSource",
    "decode_audio",
    "list_input_devices",
    "list_output_devices",
    "render_segments",
    "resample",
    "to_mono",
    "validate_samples",
]
