"""StyleGAN3 (alias-free) generator in plain torch, numerically faithful to NVIDIA's stylegan3.

The math is that of NVIDIA's ``training/networks_stylegan3.py`` (configs ``stylegan3-t`` and
``stylegan3-r``) with the reference (non-CUDA) semantics of its ``filtered_lrelu`` op:

* mapping: the StyleGAN2 mapping network of :mod:`model.stylegan2` (z normalized, equalized-lr
  fully connected layers of width ``w_dim``, tracked ``w_avg``, truncation);
* synthesis input: Fourier features ``sin(2 pi (f . p + phase))`` of fixed random frequencies on a
  sampling grid, rotated and translated by an affine transform predicted from ``w[0]`` and by a
  user transform (the *camera*, :meth:`SynthesisNetwork.set_camera`), then mixed by a learned
  matrix;
* ``num_layers`` synthesis layers and a final toRGB layer, each: a modulated convolution (3x3 for
  config t, 1x1 for r; the input divided by the square root of a tracked ``magnitude_ema``), then
  the *filtered leaky ReLU*: add bias, up-sample with a low-pass FIR filter, leaky ReLU (slope 0.2,
  gain sqrt(2)) and clamp, low-pass filter and down-sample. Cutoffs, stopbands, sampling rates,
  sizes and channel counts follow NVIDIA's geometric progression (:func:`layer_specs`);
* the image is the last layer times ``output_scale``.

State-dict names are NVIDIA's (``synthesis.input.affine.weight``, ``synthesis.L3_52_512.weight``,
``synthesis.L3_52_512.up_filter``, ...), so an NVIDIA ``G_ema`` maps on key for key; the FIR
filters and ``magnitude_ema`` are buffers and come from the checkpoint.

Beyond NVIDIA: ``synthesis(ws, aspect=16/9)`` draws a wider (or, for aspect < 1, taller) picture
natively by widening every layer's sampling grid symmetrically (the extra samples on each side of
a layer cover at least the same distance as the image's extra columns), so the square picture sits
in the centre of the wide one and the sides are more of the same infinite plane, not a stretched
or repeated copy.

NVIDIA's conventions (``torch_utils/ops``):

* ``upfirdn2d(x, f, up, down, pad, gain)``: insert ``up - 1`` zeros after every sample, pad
  (negative pads crop), *convolve* with ``f`` (a 1-D filter is applied along x then y, each
  scaled by ``sqrt(gain)``; a 2-D filter once, scaled by ``gain``), keep every ``down``-th sample.
* ``filtered_lrelu(x, fu, fd, b, up, down, padding, gain, slope, clamp)`` (reference version):
  ``upfirdn2d(clamp(lrelu(upfirdn2d(x + b, fu, up, padding, gain=up**2), slope) * gain), fd, down)``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.formats import load_network, save_network
from model.stylegan2 import FullyConnectedLayer, MappingNetwork, aspect_shape, check_noise_mode, check_ws

log = logging.getLogger(__name__)

KIND = "stylegan3"
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
DEMOD_EPS = 1e-8


# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class StyleGAN3Config:
    """Every hyperparameter of the generator; saved beside the weights and enough to rebuild it.

    Defaults are NVIDIA's ``stylegan3-t``; ``stylegan3-r`` is ``conv_kernel=1``,
    ``use_radial_filters=True`` and twice the channels.
    """

    z_dim: int = 512  # input latent (Z) dimensionality
    w_dim: int = 512  # intermediate latent (W) dimensionality
    mapping_layers: int = 2  # fully connected layers in the mapping network
    mapping_lr_multiplier: float = 0.01  # equalized-lr multiplier of the mapping layers
    w_avg_beta: float = 0.998  # decay of the tracked average of W (training only)
    resolution: int = 256  # output image resolution
    img_channels: int = 3  # number of output colour channels
    channel_base: int = 32768  # overall multiplier for the number of channels
    channel_max: int = 512  # maximum number of channels in any layer
    num_layers: int = 14  # synthesis layers, excluding the Fourier input and toRGB
    num_critical: int = 2  # critically sampled layers at the end
    first_cutoff: float = 2.0  # cutoff frequency of the first layer (f_c,0)
    first_stopband: float = 2**2.1  # minimum stopband of the first layer (f_t,0)
    last_stopband_rel: float = 2**0.3  # minimum stopband of the last layer, relative to its cutoff
    margin_size: int = 10  # extra samples around the image in the non-final layers
    output_scale: float = 0.25  # scale of the output image
    conv_kernel: int = 3  # convolution kernel size (3 for config t, 1 for r); toRGB is 1x1
    filter_size: int = 6  # low-pass filter taps per sampling-rate ratio when resampling
    lrelu_upsampling: int = 2  # relative sampling rate of the leaky ReLU
    use_radial_filters: bool = False  # radially symmetric down-sampling filters (config r)
    conv_clamp: float | None = 256.0  # clamp layer outputs to +-X (None = no clamping)
    magnitude_ema_beta: float = 0.999  # decay of the input magnitude average (training only)

    def __post_init__(self) -> None:
        for name in ("z_dim", "w_dim", "mapping_layers", "resolution", "img_channels", "channel_base",
                     "channel_max", "num_layers", "conv_kernel", "filter_size", "lrelu_upsampling"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"StyleGAN3Config.{name} must be a positive integer, got {value!r}")
        for name in ("num_critical", "margin_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"StyleGAN3Config.{name} must be a non-negative integer, got {value!r}")
        if self.num_critical >= self.num_layers:
            raise ValueError(f"StyleGAN3Config.num_critical ({self.num_critical}) must be < num_layers ({self.num_layers})")
        if self.resolution < 4 or self.resolution > 4096 or self.resolution % 2:
            raise ValueError(f"StyleGAN3Config.resolution must be even, in 4..4096, got {self.resolution}")
        for name in ("mapping_lr_multiplier", "first_cutoff", "first_stopband", "last_stopband_rel", "output_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"StyleGAN3Config.{name} must be a positive number, got {value!r}")
            setattr(self, name, float(value))
        for name in ("w_avg_beta", "magnitude_ema_beta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"StyleGAN3Config.{name} must be in [0, 1], got {value!r}")
            setattr(self, name, float(value))
        if not isinstance(self.use_radial_filters, bool):
            raise ValueError(f"StyleGAN3Config.use_radial_filters must be true or false, got {self.use_radial_filters!r}")
        if self.conv_clamp is not None:
            c = self.conv_clamp
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0:
                raise ValueError(f"StyleGAN3Config.conv_clamp must be a positive number or None, got {c!r}")
            self.conv_clamp = float(c)
        layer_specs(self)  # raises ValueError when the progression has no integer resampling ratios

    @property
    def num_ws(self) -> int:
        """W vectors the synthesis network takes: the input, ``num_layers`` layers and toRGB."""
        return self.num_layers + 2


@dataclass(frozen=True)
class LayerSpec:
    """One synthesis layer's geometry (NVIDIA's per-layer arguments), for the square picture."""

    name: str  # NVIDIA's attribute name, L{idx}_{size}_{channels}
    in_channels: int
    out_channels: int
    in_size: int  # samples per side of the input (square picture)
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    is_torgb: bool
    is_critically_sampled: bool


@dataclass(frozen=True)
class InputSpec:
    channels: int
    size: int
    sampling_rate: int
    bandwidth: float


def layer_specs(config: StyleGAN3Config) -> tuple[InputSpec, list[LayerSpec]]:
    """NVIDIA's geometric progression of cutoffs, stopbands, sampling rates, sizes and channels."""
    n, res = config.num_layers, config.resolution
    last_cutoff = res / 2
    last_stopband = last_cutoff * config.last_stopband_rel
    exponents = np.minimum(np.arange(n + 1) / (n - config.num_critical), 1)
    cutoffs = config.first_cutoff * (last_cutoff / config.first_cutoff) ** exponents
    stopbands = config.first_stopband * (last_stopband / config.first_stopband) ** exponents
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + config.margin_size * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum((config.channel_base / 2) / cutoffs, config.channel_max))
    channels[-1] = config.img_channels
    if channels.min() < 1:
        raise ValueError(f"StyleGAN3Config.channel_base {config.channel_base} gives layers without channels")
    specs = []
    for idx in range(n + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == n
        spec = LayerSpec(
            name=f"L{idx}_{int(sizes[idx])}_{int(channels[idx])}",
            in_channels=int(channels[prev]), out_channels=int(channels[idx]),
            in_size=int(sizes[prev]), out_size=int(sizes[idx]),
            in_sampling_rate=int(sampling_rates[prev]), out_sampling_rate=int(sampling_rates[idx]),
            in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[idx]),
            in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[idx]),
            is_torgb=is_torgb, is_critically_sampled=idx >= n - config.num_critical,
        )
        tmp = max(spec.in_sampling_rate, spec.out_sampling_rate) * (1 if is_torgb else config.lrelu_upsampling)
        if tmp % spec.in_sampling_rate or tmp % spec.out_sampling_rate:
            raise ValueError(f"StyleGAN3Config gives layer {spec.name} non-integer resampling ratios "
                             f"({spec.in_sampling_rate} -> {tmp} -> {spec.out_sampling_rate})")
        specs.append(spec)
    inp = InputSpec(channels=int(channels[0]), size=int(sizes[0]), sampling_rate=int(sampling_rates[0]),
                    bandwidth=float(cutoffs[0]))
    return inp, specs


# ----------------------------------------------------------------------------------------------
# Filters


def _kaiser_beta(n_taps: int, width: float, nyquist: float) -> float:
    """Kaiser window beta for a transition band ``width`` (Kaiser's empirical formulas)."""
    atten = 2.285 * (n_taps - 1) * math.pi * (width / nyquist) + 7.95
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def lowpass_filter(n_taps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """NVIDIA's ``design_lowpass_filter``: None for 1 tap, else a Kaiser-windowed low-pass filter.

    Separable: the 1-D windowed sinc normalized to unit DC gain (what ``scipy.signal.firwin``
    designs). Radial: a 2-D windowed jinc ``J1(2 pi fc r) / (pi r)``, normalized to sum 1.
    """
    if n_taps < 1:
        raise ValueError(f"filter needs at least one tap, got {n_taps}")
    if n_taps == 1:
        return None
    beta = _kaiser_beta(n_taps, width, fs / 2)
    window = np.kaiser(n_taps, beta)
    t = np.arange(n_taps) - (n_taps - 1) / 2
    if not radial:
        c = cutoff / (fs / 2)
        f = c * np.sinc(c * t) * window
        return torch.as_tensor(f / f.sum(), dtype=torch.float32)
    x = t / fs
    r = np.hypot(*np.meshgrid(x, x))
    j1 = torch.special.bessel_j1(torch.as_tensor(2 * cutoff * np.pi * r, dtype=torch.float64)).numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(r > 0, j1 / (np.pi * r), cutoff)  # limit of J1(2 pi c r) / (pi r) at r = 0
    f = f * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


def _fir_along(x: torch.Tensor, k: torch.Tensor, dim: int, up: int, down: int, pad: tuple[int, int]) -> torch.Tensor:
    """1-D ``upfirdn`` along ``dim`` (3 = x, 2 = y) of [N, C, H, W], with an already flipped filter
    ``k`` for correlation. Up-sampling runs polyphase (a strided transposed convolution: no
    multiplications by inserted zeros); down-sampling is a strided convolution."""
    c, taps = x.shape[1], k.numel()
    shape = (1, taps) if dim == 3 else (taps, 1)
    if up > 1:
        # Full convolution of the zero-stuffed signal: y[m] = sum_j x[j] f[m - j * up], m < (L-1)*up + taps.
        f = k.flip(0).reshape(1, 1, *shape).expand(c, 1, *shape)
        y = F.conv_transpose2d(x, f, stride=(1, up) if dim == 3 else (up, 1), groups=c)
        # NVIDIA's padded valid output i is full-convolution sample i + taps - 1 - pad0.
        length = x.shape[dim] * up + pad[0] + pad[1] - taps + 1
        first = taps - 1 - pad[0]
        lo, hi = -first, first + length - y.shape[dim]  # pad (> 0) or crop (< 0) at each end
        y = F.pad(y, [lo, hi, 0, 0] if dim == 3 else [0, 0, lo, hi])
        return y[:, :, :, ::down] if down > 1 and dim == 3 else y[:, :, ::down] if down > 1 else y
    x = F.pad(x, [pad[0], pad[1], 0, 0] if dim == 3 else [0, 0, pad[0], pad[1]])
    stride = (1, down) if dim == 3 else (down, 1)
    return F.conv2d(x, k.reshape(1, 1, *shape).expand(c, 1, *shape), groups=c, stride=stride)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up: int = 1, down: int = 1,
              padding: Sequence[int] = (0, 0, 0, 0), gain: float = 1.0) -> torch.Tensor:
    """Up-sample (zero insertion), pad/crop ``(x0, x1, y0, y1)``, convolve with ``f``, down-sample.

    x: [N, C, H, W]; f: None (identity), [k] (separable, along x then y) or [k, k].
    """
    x0, x1, y0, y1 = padding
    if f is not None and f.ndim == 1:
        k = (f.to(x.dtype) * math.sqrt(gain)).flip(0)  # convolution, not correlation
        x = _fir_along(x, k, 3, up, down, (x0, x1))
        return _fir_along(x, k, 2, up, down, (y0, y1))
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1])
        x = x.reshape(n, c, h * up, w * up)
    x = F.pad(x, [x0, x1, y0, y1])  # negative pads crop
    if f is None:
        if gain != 1:
            x = x * gain
        return x[:, :, ::down, ::down] if down > 1 else x
    k = (f.to(x.dtype) * gain).flip([0, 1])[None, None].expand(c, 1, *f.shape)
    return F.conv2d(x, k, groups=c, stride=down)


def filtered_lrelu(x: torch.Tensor, fu: torch.Tensor | None, fd: torch.Tensor | None, b: torch.Tensor,
                   up: int, down: int, padding: Sequence[int], gain: float, slope: float,
                   clamp: float | None) -> torch.Tensor:
    """Bias, FIR up-sampling, leaky ReLU with gain and clamp, FIR down-sampling (NVIDIA's reference op)."""
    x = x + b.reshape(1, -1, 1, 1)
    # lrelu(x) * gain == lrelu(x * gain) for gain > 0: the gain rides on the up-sampling filter.
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up * up * gain)
    if slope != 1:
        x = F.leaky_relu(x, slope)
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return upfirdn2d(x, fd, down=down)


# ----------------------------------------------------------------------------------------------
# Camera


def camera_matrix(translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0) -> torch.Tensor:
    """The synthesis input's user transform for a camera move: [3, 3] float32.

    ``translate`` = (x, y) moves the picture's content right and down by that many picture
    heights; ``rotate`` turns it by that many degrees (counter-clockwise on screen). The matrix is
    the inverse of that motion, as NVIDIA's ``synthesis.input.transform`` expects.
    """
    tx, ty = (float(v) for v in translate)
    a = math.radians(float(rotate))
    s, c = math.sin(a), math.cos(a)
    motion = np.array([[c, s, tx], [-s, c, ty], [0.0, 0.0, 1.0]])
    return torch.as_tensor(np.linalg.inv(motion), dtype=torch.float32)


def frame_size(resolution: int, aspect: float) -> tuple[int, int]:
    """``(width, height)`` of a picture of ``aspect`` = width / height: the short side is the
    resolution, the long side rounded to an even number of pixels (as StyleGAN2's
    :func:`model.stylegan2.aspect_shape`, which also checks ``aspect``)."""
    height, width = aspect_shape(resolution, aspect)
    return width, height


# ----------------------------------------------------------------------------------------------
# Network


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool,
                     padding: int, input_gain: torch.Tensor) -> torch.Tensor:
    """NVIDIA's modulated conv (weights and styles pre-normalized when demodulating), computed by
    scaling activations around one shared convolution. x [N,I,H,W], weight [O,I,k,k], styles [N,I]."""
    n = x.shape[0]
    if demodulate:
        weight = weight * weight.square().mean([1, 2, 3], keepdim=True).rsqrt()
        # NVIDIA normalizes by the mean over the whole batch; demodulation cancels the scale, so a
        # per-sample mean gives the same picture and keeps samples independent of their batch.
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
    x = x * (styles * input_gain).reshape(n, -1, 1, 1)
    x = F.conv2d(x, weight, padding=padding)
    if demodulate:
        w2 = weight.square().sum(dim=[2, 3])  # [O, I]
        dcoefs = (styles.square().matmul(w2.t()) + DEMOD_EPS).rsqrt()  # [N, O]
        x = x * dcoefs.reshape(n, -1, 1, 1)
    return x


class SynthesisInput(nn.Module):
    """Fourier features on a (possibly widened) sampling grid, transformed by w[0] and the camera."""

    def __init__(self, w_dim: int, spec: InputSpec) -> None:
        super().__init__()
        self.w_dim = w_dim
        self.channels = spec.channels
        self.size = spec.size
        self.sampling_rate = spec.sampling_rate
        self.bandwidth = spec.bandwidth
        freqs = torch.randn([self.channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * self.bandwidth
        self.weight = nn.Parameter(torch.randn([self.channels, self.channels]))
        self.affine = FullyConnectedLayer(w_dim, 4)
        with torch.no_grad():  # NVIDIA: weight_init=0, bias_init=[1, 0, 0, 0] (identity transform)
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3))  # stored user transform (NVIDIA's)
        self.register_buffer("freqs", freqs)  # [C, 2]
        self.register_buffer("phases", torch.rand([self.channels]) - 0.5)  # [C]
        self.register_buffer("camera", torch.eye(3), persistent=False)  # our camera, set per frame

    def forward(self, w: torch.Tensor, size: tuple[int, int], camera: torch.Tensor | None = None) -> torch.Tensor:
        """w [N, w_dim] -> features [N, C, H, W] for a grid of ``size`` = (W, H) samples."""
        n = w.shape[0]
        cam = self.camera if camera is None else camera.to(device=w.device, dtype=torch.float32)
        user = self.transform @ cam  # [3, 3] or [N, 3, 3]
        t = self.affine(w)  # [N, 4] = (r_c, r_s, t_x, t_y)
        t = t / t[:, :2].norm(dim=1, keepdim=True)
        c, s, tx, ty = t.unbind(dim=1)
        zero, one = torch.zeros_like(c), torch.ones_like(c)
        m_r = torch.stack([c, -s, zero, s, c, zero, zero, zero, one], dim=1).reshape(n, 3, 3)
        m_t = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], dim=1).reshape(n, 3, 3)
        transforms = m_r @ m_t @ user  # [N, 3, 3]
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ transforms[:, :2, 2:]).squeeze(2)  # [N, C]
        freqs = self.freqs.unsqueeze(0) @ transforms[:, :2, :2]  # [N, C, 2]
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth)
                      / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)  # [N, C]
        width, height = size
        # Sample centres, in units of the picture height, centred on 0 (affine_grid, align_corners=False).
        gx = (torch.arange(width, device=w.device, dtype=torch.float32) + 0.5 - width / 2) / self.sampling_rate
        gy = (torch.arange(height, device=w.device, dtype=torch.float32) + 0.5 - height / 2) / self.sampling_rate
        # [N, H, W, C]: f_x * x + f_y * y + phase
        x = (gx.reshape(1, 1, width, 1) * freqs[:, None, None, :, 0]
             + gy.reshape(1, height, 1, 1) * freqs[:, None, None, :, 1]
             + phases[:, None, None, :])
        x = torch.sin(x * (2 * math.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)  # [N, C, H, W]

    def extra_repr(self) -> str:
        return (f"w_dim={self.w_dim}, channels={self.channels}, size={self.size}, "
                f"sampling_rate={self.sampling_rate}, bandwidth={self.bandwidth:g}")


class SynthesisLayer(nn.Module):
    """Modulated conv + filtered leaky ReLU (or, for toRGB, modulated 1x1 conv + bias + clamp)."""

    def __init__(self, w_dim: int, spec: LayerSpec, config: StyleGAN3Config) -> None:
        super().__init__()
        self.spec = spec
        self.is_torgb = spec.is_torgb
        self.in_channels = spec.in_channels
        self.out_channels = spec.out_channels
        self.in_size = spec.in_size
        self.out_size = spec.out_size
        self.in_sampling_rate = spec.in_sampling_rate
        self.out_sampling_rate = spec.out_sampling_rate
        self.conv_kernel = 1 if spec.is_torgb else config.conv_kernel
        self.conv_clamp = config.conv_clamp
        tmp_rate = max(spec.in_sampling_rate, spec.out_sampling_rate) * (1 if spec.is_torgb else config.lrelu_upsampling)
        self.affine = FullyConnectedLayer(w_dim, spec.in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([spec.out_channels, spec.in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = nn.Parameter(torch.zeros([spec.out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))
        self.up_factor = tmp_rate // spec.in_sampling_rate
        self.down_factor = tmp_rate // spec.out_sampling_rate
        self.up_taps = config.filter_size * self.up_factor if self.up_factor > 1 and not spec.is_torgb else 1
        self.down_taps = config.filter_size * self.down_factor if self.down_factor > 1 and not spec.is_torgb else 1
        self.down_radial = config.use_radial_filters and not spec.is_critically_sampled
        # None when the filter is the identity: then NVIDIA's state dict has no such entry either.
        self.register_buffer("up_filter", lowpass_filter(self.up_taps, spec.in_cutoff, spec.in_half_width * 2, tmp_rate))
        self.register_buffer("down_filter", lowpass_filter(self.down_taps, spec.out_cutoff, spec.out_half_width * 2,
                                                           tmp_rate, radial=self.down_radial))
        self.gain = 1.0 if spec.is_torgb else LRELU_GAIN
        self.slope = 1.0 if spec.is_torgb else LRELU_SLOPE
        self.weight_gain = 1 / math.sqrt(spec.in_channels * self.conv_kernel**2) if spec.is_torgb else 1.0

    def padding(self, in_size: tuple[int, int], out_size: tuple[int, int]) -> list[int]:
        """``(x0, x1, y0, y1)`` padding of the up-sampled signal so ``in_size`` maps to ``out_size``
        (NVIDIA's formula, with the symmetric sample positions of its Appendix C.3)."""
        pads = []
        for n_in, n_out in zip(in_size, out_size):
            total = (n_out - 1) * self.down_factor + 1
            total -= (n_in + self.conv_kernel - 1) * self.up_factor
            total += self.up_taps + self.down_taps - 2
            lo = (total + self.up_factor) // 2
            pads += [lo, total - lo]
        return pads

    def forward(self, x: torch.Tensor, w: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """x [N, I, H, W], w [N, w_dim] -> [N, O, out_H, out_W] with ``out_size`` = (out_W, out_H)."""
        styles = self.affine(w)  # [N, I]
        if self.is_torgb:
            styles = styles * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=not self.is_torgb,
                             padding=self.conv_kernel - 1, input_gain=self.magnitude_ema.rsqrt())
        pad = self.padding((x.shape[3] - self.conv_kernel + 1, x.shape[2] - self.conv_kernel + 1), out_size)
        x = filtered_lrelu(x, self.up_filter, self.down_filter, self.bias, self.up_factor, self.down_factor,
                           pad, self.gain, self.slope, self.conv_clamp)
        if (x.shape[3], x.shape[2]) != tuple(out_size):
            raise RuntimeError(f"layer {self.spec.name}: produced {tuple(x.shape[2:])}, expected {out_size[::-1]}")
        return x

    def extra_repr(self) -> str:
        s = self.spec
        return (f"is_torgb={s.is_torgb}, critically_sampled={s.is_critically_sampled}, "
                f"channels={s.in_channels}->{s.out_channels}, size={s.in_size}->{s.out_size}, "
                f"sampling_rate={s.in_sampling_rate}->{s.out_sampling_rate}, up={self.up_factor}, "
                f"down={self.down_factor}, kernel={self.conv_kernel}, radial={self.down_radial}")


class SynthesisNetwork(nn.Module):
    """W+ [N, num_ws, w_dim] -> image [N, C, H, W] in about [-1, 1]."""

    def __init__(self, config: StyleGAN3Config) -> None:
        super().__init__()
        self.w_dim = config.w_dim
        self.img_resolution = config.resolution
        self.img_channels = config.img_channels
        self.num_ws = config.num_ws
        self.output_scale = config.output_scale
        input_spec, specs = layer_specs(config)
        self.input = SynthesisInput(config.w_dim, input_spec)
        self.layer_names: list[str] = []
        for spec in specs:
            setattr(self, spec.name, SynthesisLayer(config.w_dim, spec, config))
            self.layer_names.append(spec.name)

    def layers(self) -> list[SynthesisLayer]:
        return [getattr(self, name) for name in self.layer_names]

    def grid_sizes(self, aspect: float = 1.0) -> list[tuple[int, int]]:
        """``(W, H)`` of the input grid and of every layer's output for a picture of ``aspect``.

        Each grid grows by the same number of samples on both sides (so centres stay aligned and
        NVIDIA's padding formula stays exact); a layer at sampling rate s gains
        ``ceil(e * s / resolution)`` samples per side for the picture's ``e`` extra pixels.
        """
        width, height = frame_size(self.img_resolution, aspect)
        ex, ey = (width - self.img_resolution) // 2, (height - self.img_resolution) // 2
        res = self.img_resolution

        def grown(size: int, rate: int) -> tuple[int, int]:
            return size + 2 * math.ceil(ex * rate / res), size + 2 * math.ceil(ey * rate / res)

        sizes = [grown(self.input.size, self.input.sampling_rate)]
        sizes += [grown(layer.out_size, layer.out_sampling_rate) for layer in self.layers()]
        return sizes

    def set_camera(self, translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0) -> None:
        """Move the camera for the following frames: see :func:`camera_matrix`. Cheap (a 3x3 copy)."""
        self.input.camera.copy_(camera_matrix(translate, rotate))

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", aspect: float = 1.0,
                camera: torch.Tensor | None = None) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> [N, C, H, W]; W / H = ``aspect`` (:func:`frame_size`).

        ``noise_mode`` is accepted for interface compatibility (StyleGAN3 has no noise inputs).
        ``camera``: a [3, 3] or [N, 3, 3] user transform (:func:`camera_matrix`) for this call
        instead of the one :meth:`set_camera` stored.
        """
        check_ws(ws, self.num_ws, self.w_dim)
        check_noise_mode(noise_mode)
        sizes = self.grid_sizes(aspect)
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0], sizes[0], camera)
        for layer, w, size in zip(self.layers(), ws[1:], sizes[1:]):
            x = layer(x, w, size)
        if self.output_scale != 1:
            x = x * self.output_scale
        return x

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"


class Generator(nn.Module):
    """StyleGAN3 generator: ``mapping`` (z -> W+) then ``synthesis`` (W+ -> image)."""

    def __init__(self, config: StyleGAN3Config) -> None:
        super().__init__()
        if not isinstance(config, StyleGAN3Config):
            raise TypeError(f"Generator expects a StyleGAN3Config, got {type(config).__name__}")
        self.config = config
        self.z_dim = config.z_dim
        self.w_dim = config.w_dim
        self.img_resolution = config.resolution
        self.img_channels = config.img_channels
        self.synthesis = SynthesisNetwork(config)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(config.z_dim, config.w_dim, self.num_ws, config.mapping_layers,
                                      config.w_dim, config.mapping_lr_multiplier, config.w_avg_beta)

    def set_camera(self, translate: Sequence[float] = (0.0, 0.0), rotate: float = 0.0) -> None:
        """See :meth:`SynthesisNetwork.set_camera`."""
        self.synthesis.set_camera(translate, rotate)

    def forward(
        self,
        z: torch.Tensor,  # [N, z_dim]
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        aspect: float = 1.0,
    ) -> torch.Tensor:  # [N, C, H, W]
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, aspect=aspect)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"


# ----------------------------------------------------------------------------------------------
# Native checkpoints


def save_generator(path: str | Path, G: Generator, metadata: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``G`` as PATH.safetensors + PATH.json (kind 'stylegan3')."""
    return save_network(path, G, G.config, KIND, metadata)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Load a native StyleGAN3 generator checkpoint; raises model.formats.CheckpointError on any problem."""
    G, _, _ = load_network(path, StyleGAN3Config, Generator, KIND, device=device)
    return G
