"""Audio features in torch: the papers' log-mel spectrogram and a few cheap reactivity features.

One implementation serves training and the live app alike (and runs on whatever device its
input is on). The log-mel follows the papers' public code, which used librosa::

    S = librosa.feature.melspectrogram(y, sr=44100, n_fft=2048, hop_length=512, n_mels=128)
    x = librosa.power_to_db(S, ref=np.max) / 80 + 1          # values in [0, 1]

We reproduce that without librosa: ``torch.stft`` (Hann window, centred frames, zero padding
as librosa >= 0.10 does) and our own mel filterbank with librosa's defaults (Slaney mel scale,
Slaney area normalisation), cached per setting like whisper's ``mel_filters``.

What ``ref=max`` means live: every window is scaled so that its own loudest bin is 0 dB, so a
whisper and a scream with the same spectral shape give the same features, and a window of
digital silence becomes a flat 1.0 (librosa's behaviour, kept for fidelity to the trained
models). Loudness therefore has to come from elsewhere: :func:`rms_loudness` (Sound2Scene's
"volume sets the size of the change"). ``MelConfig.ref_power`` offers a fixed reference
instead, which keeps loudness in the features (silence → 0, full scale → about 1).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from dataclasses import dataclass
from typing import Sequence, TypeVar

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)

# The papers' settings (Sound-guided Semantic Image Manipulation / Video Generation).
PAPER_SAMPLE_RATE = 44100
PAPER_N_FFT = 2048
PAPER_HOP_LENGTH = 512
PAPER_N_MELS = 128
PAPER_TOP_DB = 80.0

# Default low / mid / high split (Hz) for band_energies; None = Nyquist.
DEFAULT_BAND_EDGES: tuple[float | None, ...] = (0.0, 250.0, 4000.0, None)


@dataclass(frozen=True)
class MelConfig:
    """Log-mel settings; the defaults are the papers'. Saved in every bundle."""

    sample_rate: int = PAPER_SAMPLE_RATE  # Audio rate the models expect (Hz).
    n_fft: int = PAPER_N_FFT  # FFT size = window length (samples).
    hop_length: int = PAPER_HOP_LENGTH  # Samples between frames.
    n_mels: int = PAPER_N_MELS  # Mel bins.
    f_min: float = 0.0  # Lowest filter edge (Hz).
    f_max: float | None = None  # Highest filter edge (Hz); None = Nyquist.
    top_db: float | None = PAPER_TOP_DB  # Dynamic range kept below the window's peak; None = all.
    norm_scale: float = PAPER_TOP_DB  # Normalised output = dB / norm_scale + 1 (papers: 80).
    ref_power: float | None = None  # None: ref = the window's max power (papers). A number: fixed ref.
    amin: float = 1e-10  # Power floor before the log.
    htk: bool = False  # HTK mel formula instead of Slaney's (librosa's htk flag).
    slaney_norm: bool = True  # Scale each filter to unit area (librosa's norm="slaney").

    def __post_init__(self) -> None:
        def positive_int(name: str) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"MelConfig.{name} must be a positive integer, got {value!r}")

        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            positive_int(name)
        nyquist = self.sample_rate / 2
        f_max = nyquist if self.f_max is None else self.f_max
        if not (0.0 <= self.f_min < f_max <= nyquist):
            raise ValueError(
                f"MelConfig: need 0 <= f_min < f_max <= sample_rate/2, got f_min={self.f_min}, "
                f"f_max={self.f_max}, sample_rate={self.sample_rate}"
            )
        if self.top_db is not None and not self.top_db > 0:
            raise ValueError(f"MelConfig.top_db must be positive or None, got {self.top_db!r}")
        if not self.norm_scale > 0:
            raise ValueError(f"MelConfig.norm_scale must be positive, got {self.norm_scale!r}")
        if self.ref_power is not None and not self.ref_power > 0:
            raise ValueError(f"MelConfig.ref_power must be positive or None, got {self.ref_power!r}")
        if not self.amin > 0:
            raise ValueError(f"MelConfig.amin must be positive, got {self.amin!r}")

    @property
    def n_freqs(self) -> int:
        """Rows of the STFT (n_fft // 2 + 1)."""
        return self.n_fft // 2 + 1

    def num_frames(self, num_samples: int) -> int:
        """Frames :class:`LogMel` returns for ``num_samples`` samples (centred frames)."""
        return 1 + num_samples // self.hop_length

    def samples_for_seconds(self, seconds: float) -> int:
        """Samples in ``seconds`` of audio at this rate (rounded)."""
        return int(round(seconds * self.sample_rate))

    def replace(self, **changes: object) -> "MelConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


# --- mel filterbank ---------------------------------------------------------------------------

# The live frontend of vjapp's own bundles (the embedded default, random stand-ins, vjapp-train's
# default): half the papers' rate and mel bins, enough for the sound classes and 4x cheaper.
LIVE_MEL = MelConfig(sample_rate=22050, n_fft=1024, hop_length=256, n_mels=64)

_SLANEY_F_SP = 200.0 / 3  # Hz per mel in the linear part
_SLANEY_MIN_LOG_HZ = 1000.0  # where the log part starts
_SLANEY_MIN_LOG_MEL = _SLANEY_MIN_LOG_HZ / _SLANEY_F_SP  # = 15
_SLANEY_LOGSTEP = math.log(6.4) / 27.0  # step size of the log part


def hz_to_mel(freqs: np.ndarray, htk: bool = False) -> np.ndarray:
    """Hz → mel; Slaney's scale (linear below 1 kHz, log above) unless ``htk``."""
    f = np.asarray(freqs, dtype=np.float64)
    if htk:
        return 2595.0 * np.log10(1.0 + f / 700.0)
    mels = f / _SLANEY_F_SP
    log_part = f >= _SLANEY_MIN_LOG_HZ
    safe = np.where(log_part, f, _SLANEY_MIN_LOG_HZ)
    return np.where(log_part, _SLANEY_MIN_LOG_MEL + np.log(safe / _SLANEY_MIN_LOG_HZ) / _SLANEY_LOGSTEP, mels)


def mel_to_hz(mels: np.ndarray, htk: bool = False) -> np.ndarray:
    """Mel → Hz, the inverse of :func:`hz_to_mel`."""
    m = np.asarray(mels, dtype=np.float64)
    if htk:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    freqs = _SLANEY_F_SP * m
    log_part = m >= _SLANEY_MIN_LOG_MEL
    return np.where(log_part, _SLANEY_MIN_LOG_HZ * np.exp(_SLANEY_LOGSTEP * (m - _SLANEY_MIN_LOG_MEL)), freqs)


@functools.lru_cache(maxsize=16)
def mel_filterbank(
    sample_rate: int,
    n_fft: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
    htk: bool = False,
    slaney_norm: bool = True,
) -> np.ndarray:
    """Triangular mel filters, float32 ``[n_mels, n_fft // 2 + 1]`` (read-only, cached).

    Same construction as ``librosa.filters.mel``: ``n_mels + 2`` points evenly spaced in mel
    between ``f_min`` and ``f_max``, a triangle over each consecutive triple, and (Slaney
    norm) each triangle scaled by ``2 / bandwidth`` so every filter has unit area in Hz.
    """
    if f_max is None:
        f_max = sample_rate / 2.0
    fft_freqs = np.fft.rfftfreq(n_fft, d=1.0 / sample_rate)  # [F]
    mel_pts = np.linspace(hz_to_mel(np.array(f_min), htk), hz_to_mel(np.array(f_max), htk), n_mels + 2)
    hz_pts = mel_to_hz(mel_pts, htk)  # [n_mels + 2]
    widths = np.diff(hz_pts)  # [n_mels + 1]
    ramps = hz_pts[:, None] - fft_freqs[None, :]  # [n_mels + 2, F]
    lower = -ramps[:-2] / widths[:-1, None]  # rising edge
    upper = ramps[2:] / widths[1:, None]  # falling edge
    weights = np.maximum(0.0, np.minimum(lower, upper))  # [n_mels, F]
    if slaney_norm:
        weights *= (2.0 / (hz_pts[2:] - hz_pts[:-2]))[:, None]
    empty = np.flatnonzero(weights.max(axis=1) <= 0)
    if empty.size:
        log.warning(
            "mel filterbank: %d of %d filters are empty (n_mels=%d too high for n_fft=%d?)",
            empty.size, n_mels, n_mels, n_fft,
        )
    out = weights.astype(np.float32)
    out.setflags(write=False)
    return out


# --- log-mel module -----------------------------------------------------------------------------


class LogMel(nn.Module):
    """Waveform ``[B, samples]`` (or ``[samples]``) → normalised log-mel ``[B, n_mels, frames]``.

    Frames are centred (``frames = 1 + samples // hop``). Output is
    ``power_to_db(mel_power, ref) / norm_scale + 1``, i.e. in [0, 1] with the papers' settings.
    The window and filterbank are non-persistent buffers: the module has no state to save and
    follows its input to any device.
    """

    def __init__(self, config: MelConfig | None = None) -> None:
        super().__init__()
        self.config = config or MelConfig()
        c = self.config
        fb = mel_filterbank(c.sample_rate, c.n_fft, c.n_mels, c.f_min, c.f_max, c.htk, c.slaney_norm)
        self.register_buffer("window", torch.hann_window(c.n_fft, periodic=True), persistent=False)  # [n_fft]
        self.register_buffer("filterbank", torch.from_numpy(fb.copy()), persistent=False)  # [n_mels, F]

    def extra_repr(self) -> str:
        c = self.config
        return f"sr={c.sample_rate}, n_fft={c.n_fft}, hop={c.hop_length}, n_mels={c.n_mels}, ref={c.ref_power or 'max'}"

    def power_mel(self, audio: torch.Tensor) -> torch.Tensor:
        """Mel power spectrogram ``[B, n_mels, frames]`` (before the log)."""
        x = self._check_audio(audio)
        if self.window.device != x.device:
            self.to(x.device)
        c = self.config
        spec = torch.stft(
            x, n_fft=c.n_fft, hop_length=c.hop_length, window=self.window,
            center=True, pad_mode="constant", return_complex=True,
        )  # [B, F, frames]
        power = spec.real.square() + spec.imag.square()  # |X|^2 without an extra abs/sqrt
        return torch.matmul(self.filterbank, power)  # [B, n_mels, frames]

    def to_db(self, mel_power: torch.Tensor) -> torch.Tensor:
        """Mel power ``[B, n_mels, frames]`` → dB, as ``librosa.power_to_db`` (ref per window or fixed)."""
        c = self.config
        db = 10.0 * torch.log10(mel_power.clamp_min(c.amin))
        if c.ref_power is None:
            peak = mel_power.amax(dim=(-2, -1), keepdim=True).clamp_min(c.amin)  # [B, 1, 1]
            db = db - 10.0 * torch.log10(peak)
            if c.top_db is not None:
                db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - c.top_db)
        else:
            db = db - 10.0 * math.log10(max(c.ref_power, c.amin))
            if c.top_db is not None:
                # Fixed reference: floor at -top_db below the reference, so silence maps to 0.
                db = db.clamp_min(-c.top_db)
        return db

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        single = audio.dim() == 1
        db = self.to_db(self.power_mel(audio))
        out = db / self.config.norm_scale + 1.0  # [B, n_mels, frames]
        return out[0] if single else out

    def _check_audio(self, audio: torch.Tensor) -> torch.Tensor:
        if not isinstance(audio, torch.Tensor):
            raise TypeError(f"LogMel expects a torch.Tensor, got {type(audio).__name__}")
        if audio.dim() == 1:
            audio = audio.unsqueeze(0)
        if audio.dim() != 2:
            raise ValueError(f"LogMel expects audio of shape [batch, samples] or [samples], got {tuple(audio.shape)}")
        if audio.shape[-1] < 1 or audio.shape[0] < 1:
            raise ValueError(f"LogMel got an empty audio tensor of shape {tuple(audio.shape)}")
        if not audio.is_floating_point():
            raise TypeError(f"LogMel expects floating-point audio, got {audio.dtype}")
        if audio.dtype != torch.float32:
            audio = audio.float()
        return audio


# --- cheap features for reactivity and the scope ----------------------------------------------


def _as_tensor(x: np.ndarray | torch.Tensor, what: str) -> tuple[torch.Tensor, bool]:
    if isinstance(x, torch.Tensor):
        t, was_numpy = x, False
    elif isinstance(x, np.ndarray):
        t, was_numpy = torch.from_numpy(x), True  # zero-copy view
    else:
        raise TypeError(f"{what} expects a numpy array or torch tensor, got {type(x).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{what} expects floating-point samples, got {t.dtype}")
    if t.dim() == 0 or t.shape[-1] == 0:
        raise ValueError(f"{what} got an empty input of shape {tuple(t.shape)}")
    return t, was_numpy


def _back(t: torch.Tensor, was_numpy: bool) -> np.ndarray | torch.Tensor:
    return t.numpy() if was_numpy else t


def rms_loudness(x: ArrayOrTensor, db: bool = True, amin: float = 1e-10) -> ArrayOrTensor:
    """RMS level over the last axis: ``[..., samples] → [...]``.

    ``db=True`` gives dB relative to full scale (a full-scale square wave is 0 dB, a full-scale
    sine about -3 dB, silence ``20*log10(amin)``); ``db=False`` the linear RMS. Returns the
    input's type (numpy in, numpy out).
    """
    t, was_numpy = _as_tensor(x, "rms_loudness")
    rms = torch.linalg.vector_norm(t, dim=-1) / math.sqrt(t.shape[-1])
    if db:
        rms = 20.0 * torch.log10(rms.clamp_min(amin))
    return _back(rms, was_numpy)  # type: ignore[return-value]


def onset_strength(mel: ArrayOrTensor, lag: int = 1) -> ArrayOrTensor:
    """Spectral flux: ``[..., n_mels, frames] → [..., frames]``.

    For each frame, the mean over mel bins of the positive increase since ``lag`` frames
    earlier (as ``librosa.onset.onset_strength`` with its defaults, without its centring
    shift). The first ``lag`` frames are 0. Works on dB or normalised log-mel alike; the
    units follow the input.
    """
    t, was_numpy = _as_tensor(mel, "onset_strength")
    if t.dim() < 2:
        raise ValueError(f"onset_strength expects [..., n_mels, frames], got shape {tuple(t.shape)}")
    if lag < 1:
        raise ValueError(f"onset_strength: lag must be >= 1, got {lag}")
    out = t.new_zeros(t.shape[:-2] + t.shape[-1:])  # [..., frames]
    if t.shape[-1] > lag:
        rise = (t[..., lag:] - t[..., :-lag]).clamp_min(0.0)  # [..., n_mels, frames - lag]
        out[..., lag:] = rise.mean(dim=-2)
    return _back(out, was_numpy)  # type: ignore[return-value]


@functools.lru_cache(maxsize=64)
def _band_bins(n: int, sample_rate: int, edges: tuple[float | None, ...]) -> tuple[tuple[int, int], ...]:
    """rfft bin ranges ``[lo, hi)`` for consecutive band edges (Hz; None = Nyquist)."""
    nyquist = sample_rate / 2.0
    hz = [nyquist if e is None else float(e) for e in edges]
    if len(hz) < 2 or any(b <= a for a, b in zip(hz, hz[1:])) or hz[0] < 0 or hz[-1] > nyquist:
        raise ValueError(f"band edges must increase within [0, {nyquist}] Hz, got {edges}")
    n_bins = n // 2 + 1
    bin_hz = sample_rate / n
    idx = [min(n_bins, int(math.ceil(f / bin_hz - 1e-9))) for f in hz]
    idx[-1] = n_bins if hz[-1] >= nyquist else idx[-1]
    return tuple((lo, max(hi, lo)) for lo, hi in zip(idx, idx[1:]))


@functools.lru_cache(maxsize=8)
def _hann_cached(n: int, device: str, dtype: torch.dtype) -> torch.Tensor:
    return torch.hann_window(n, periodic=True, dtype=dtype, device=device)


def band_energies(
    x: ArrayOrTensor,
    sample_rate: int,
    edges: Sequence[float | None] = DEFAULT_BAND_EDGES,
    db: bool = True,
    amin: float = 1e-10,
) -> ArrayOrTensor:
    """Mean spectral power per band: ``[..., samples] → [..., len(edges) - 1]``.

    One Hann-windowed FFT over the whole block; band ``i`` covers ``[edges[i], edges[i+1])``
    Hz (``None`` = Nyquist). The default edges give low / mid / high. ``db=True`` returns
    ``10*log10`` of the mean power per bin (an empty band reads as ``10*log10(amin)``).
    """
    t, was_numpy = _as_tensor(x, "band_energies")
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ValueError(f"band_energies: sample_rate must be a positive integer, got {sample_rate!r}")
    n = t.shape[-1]
    bins = _band_bins(n, sample_rate, tuple(None if e is None else float(e) for e in edges))
    window = _hann_cached(n, str(t.device), t.dtype)
    spec = torch.fft.rfft(t * window, dim=-1)  # [..., n//2+1]
    power = (spec.real.square() + spec.imag.square()) / (n * n)
    out = torch.stack(
        [power[..., lo:hi].mean(dim=-1) if hi > lo else power.new_zeros(power.shape[:-1]) for lo, hi in bins],
        dim=-1,
    )  # [..., n_bands]
    if db:
        out = 10.0 * torch.log10(out.clamp_min(amin))
    return _back(out, was_numpy)  # type: ignore[return-value]
