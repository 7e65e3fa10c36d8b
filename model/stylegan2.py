"""StyleGAN2 generator in plain torch, numerically faithful to NVIDIA's stylegan2-ada-pytorch.

The math is that of NVIDIA's ``training/networks.py`` generator with the 'skip' architecture
(the one every public StyleGAN2-ADA checkpoint uses):

* mapping: z normalized by its second moment, ``mapping_layers`` equalized-lr fully connected
  layers with leaky ReLU (slope 0.2, gain sqrt(2)), a tracked average ``w_avg`` and truncation
  toward it;
* synthesis: a learned 4x4 constant, then per resolution a block of an up-sampling modulated
  3x3 conv (``conv0``), a modulated 3x3 conv (``conv1``) and a 1x1 modulated toRGB whose output
  is added to the FIR-up-sampled image of the previous block.

State-dict names are exactly NVIDIA's (``mapping.fc0.weight``, ``synthesis.b8.conv0.affine.bias``,
...) and weights are stored raw, with the equalized learning-rate gains applied at run time, so a
NVIDIA ``G_ema`` maps onto this module key for key (see :mod:`model.import_stylegan`).

Modulated convolutions are computed by scaling the input activations by the styles, running one
ordinary convolution with the shared weight and scaling the output by the demodulation
coefficients (NVIDIA's ``fused_modconv=False`` path): the same arithmetic as per-sample weights,
cheaper for any batch size, and differentiable with respect to ``ws`` for encoder training.

:func:`prepare_for_inference` builds a separate, faster module for the live show (weights pre-cast
to bf16/fp16, gains folded, channels_last, per-layer choice between modulating activations or
weights) with the same ``synthesis(ws, noise_mode)`` interface.

NVIDIA's conventions used below (from ``torch_utils/ops``):

* ``upfirdn2d(x, f, up, pad)``: insert ``up - 1`` zeros after every sample, pad (negative pads
  crop), then *convolve* (not correlate) with the 2-D FIR filter ``f``.
* ``setup_filter([1, 3, 3, 1])``: the outer product normalized to sum 1, a [4, 4] tensor.
* ``upsample2d(x, f)``: ``upfirdn2d`` with up=2, pad ``((fw+1)//2, (fw-2)//2)``, gain 4.
* Up-sampling conv (``conv2d_resample`` with up=2, padding=1, ``flip_weight=False``): a stride-2
  transposed convolution with the weight as stored (i.e. zero insertion followed by a true
  convolution), then ``upfirdn2d`` with pad 1 on each side (for the 4-tap filter) and gain 4.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.formats import load_network, save_network

log = logging.getLogger(__name__)

KIND = "stylegan2"
NOISE_MODES = ("random", "const", "none")
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)
DEMOD_EPS = 1e-8


# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class StyleGAN2Config:
    """Every hyperparameter of the generator; saved beside the weights and enough to rebuild it."""

    z_dim: int = 512  # input latent (Z) dimensionality
    w_dim: int = 512  # intermediate latent (W) dimensionality
    mapping_layers: int = 8  # number of fully connected layers in the mapping network
    mapping_hidden_dim: int = 512  # width of the hidden mapping layers (NVIDIA's layer_features)
    mapping_lr_multiplier: float = 0.01  # equalized-lr multiplier of the mapping layers
    w_avg_beta: float = 0.995  # decay of the tracked average of W
    resolution: int = 256  # output image resolution (a power of two)
    img_channels: int = 3  # number of output colour channels
    channel_base: int = 32768  # channels at resolution r = min(channel_base // r, channel_max)
    channel_max: int = 512  # maximum channels in any layer
    conv_clamp: float | None = None  # clamp conv outputs to +-X (None = no clamping)
    resample_filter: tuple[int, ...] = (1, 3, 3, 1)  # 1-D low-pass taps for up-sampling

    def __post_init__(self) -> None:
        for name in ("z_dim", "w_dim", "mapping_layers", "mapping_hidden_dim", "img_channels",
                     "channel_base", "channel_max", "resolution"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"StyleGAN2Config.{name} must be a positive integer, got {value!r}")
        r = self.resolution
        if r < 4 or r > 1024 or r & (r - 1):
            raise ValueError(f"StyleGAN2Config.resolution must be a power of two in 4..1024, got {r}")
        if self.channel_base // r < 1:
            raise ValueError(
                f"StyleGAN2Config.channel_base {self.channel_base} gives 0 channels at resolution {r}"
            )
        for name in ("mapping_lr_multiplier",):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ValueError(f"StyleGAN2Config.{name} must be a positive number, got {value!r}")
        if not isinstance(self.w_avg_beta, (int, float)) or not 0.0 <= self.w_avg_beta <= 1.0:
            raise ValueError(f"StyleGAN2Config.w_avg_beta must be in [0, 1], got {self.w_avg_beta!r}")
        self.mapping_lr_multiplier = float(self.mapping_lr_multiplier)
        self.w_avg_beta = float(self.w_avg_beta)
        if self.conv_clamp is not None:
            if not isinstance(self.conv_clamp, (int, float)) or not self.conv_clamp > 0 or not math.isfinite(self.conv_clamp):
                raise ValueError(f"StyleGAN2Config.conv_clamp must be a positive number or None, got {self.conv_clamp!r}")
            self.conv_clamp = float(self.conv_clamp)
        taps = tuple(self.resample_filter)
        if len(taps) < 1 or not all(isinstance(t, (int, float)) and not isinstance(t, bool) for t in taps):
            raise ValueError(f"StyleGAN2Config.resample_filter must be a non-empty tuple of numbers, got {self.resample_filter!r}")
        if sum(taps) == 0 or not all(math.isfinite(t) for t in taps):
            raise ValueError(f"StyleGAN2Config.resample_filter must be finite with a non-zero sum, got {taps}")
        self.resample_filter = taps

    @property
    def num_ws(self) -> int:
        """Number of W vectors the synthesis network takes (NVIDIA's count: 2*log2(res) - 2)."""
        return 2 * int(math.log2(self.resolution)) - 2

    @property
    def block_resolutions(self) -> list[int]:
        return [2**i for i in range(2, int(math.log2(self.resolution)) + 1)]

    def channels(self, res: int) -> int:
        """Feature channels of the block at resolution ``res``."""
        return min(self.channel_base // res, self.channel_max)


# ----------------------------------------------------------------------------------------------
# Functional pieces


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector to unit root-mean-square (NVIDIA's input normalization of z)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def setup_filter(taps: Sequence[float]) -> torch.Tensor:
    """The 2-D FIR filter NVIDIA builds from 1-D taps: outer product normalized to sum 1. [k, k]"""
    f = torch.as_tensor(list(taps), dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def fir_filter2d(x: torch.Tensor, f: torch.Tensor, pad: tuple[int, int], gain: float) -> torch.Tensor:
    """``upfirdn2d`` with up=down=1: pad (x0=x1=pad[0]/pad[1] on both axes), convolve with ``f``.

    x: [N, C, H, W]; f: [kh, kw]. Convolution means the filter is flipped before torch's
    correlation, exactly as NVIDIA defines it (irrelevant for symmetric filters, kept for truth).
    """
    c = x.shape[1]
    p0, p1 = pad
    if p0 < 0 or p1 < 0:
        raise ValueError("fir_filter2d supports non-negative padding only")
    x = F.pad(x, [p0, p1, p0, p1])
    k = (f.flip([0, 1]) * gain).to(x.dtype)
    k = k[None, None].expand(c, 1, *f.shape)  # [C, 1, kh, kw] depthwise
    return F.conv2d(x, k, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """NVIDIA ``upfirdn2d.upsample2d(x, f)`` (up=2): zero insertion, pad, FIR, gain 4. [N,C,2H,2W]

    For even-length filters (NVIDIA's are) this is exactly a stride-2 depthwise transposed
    convolution with the unflipped filter, which skips building the zero-stuffed image and is
    about 10x faster on a CPU (the skip path of every block runs it).
    """
    n, c, h, w = x.shape
    fh, fw = f.shape
    if fh == fw and fw % 2 == 0:
        k = (f * 4.0).to(x.dtype)[None, None].expand(c, 1, fh, fw)  # [C, 1, k, k] depthwise
        return F.conv_transpose2d(x, k, stride=2, padding=fw - 1 - (fw + 1) // 2, groups=c)
    y = x.new_zeros(n, c, 2 * h, 2 * w)  # zero insertion: samples land on even positions
    y[:, :, ::2, ::2] = x
    return fir_filter2d(y, f, ((fw + 1) // 2, (fw - 2) // 2), gain=4.0)


def upsample_matrix(taps: Sequence[float], size: int) -> torch.Tensor:
    """The 1-D operator of ``upsample2d`` for the separable filter ``setup_filter(taps)``: a
    ``[2*size, size]`` matrix A with ``upsample2d(x, f) == A @ x @ A.T`` for x ``[..., size, size]``."""
    t = torch.as_tensor(list(taps), dtype=torch.float64)
    t = t * 2.0 / t.sum()  # 1-D taps; the 2-D filter is their outer product with gain 4 = 2 * 2
    fw = t.numel()
    p0 = (fw + 1) // 2
    a = torch.zeros(2 * size, size, dtype=torch.float64)
    for j in range(2 * size):  # u[j] = sum_k z[j + k - p0] * t[fw - 1 - k], z[2i] = x[i]
        for k in range(fw):
            m = j + k - p0
            if m % 2 == 0 and 0 <= m // 2 < size:
                a[j, m // 2] += t[fw - 1 - k]
    return a.float()


BILINEAR_SKIP_MIN = 64  # from this input size the skip image is up-sampled by bilinear interpolation


def upsample_is_bilinear(taps: Sequence[float]) -> bool:
    """Whether ``upsample2d`` with ``setup_filter(taps)`` is bilinear 2x interpolation (half-pixel
    centres, as ``F.interpolate(..., align_corners=False)``) with its outer rows and columns
    scaled by 3/4: it is for NVIDIA's [1, 3, 3, 1] (the edge sample's missing neighbour is a zero
    for the FIR, the edge sample itself for the interpolation)."""
    size = 6
    a = upsample_matrix(taps, size)
    b = F.interpolate(torch.eye(size)[None], scale_factor=2, mode="linear", align_corners=False)[0].t()
    b[0] *= 0.75
    b[-1] *= 0.75
    return bool(torch.allclose(a, b, atol=1e-6))


def upsample_bilinear_fir(img: torch.Tensor) -> torch.Tensor:
    """``upsample2d(img, setup_filter([1, 3, 3, 1]))`` as bilinear interpolation with the border
    rows and columns scaled (see :func:`upsample_is_bilinear`); [N, C, H, W] -> [N, C, 2H, 2W].
    About 6x faster than the dense matrices from 128 px up (0.66 vs 3.9 ms at 256 -> 512)."""
    y = F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
    y[..., 0, :] *= 0.75
    y[..., -1, :] *= 0.75
    y[..., :, 0] *= 0.75
    y[..., :, -1] *= 0.75
    return y


def upsample_conv2d(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """NVIDIA ``conv2d_resample(x, w, f, up=2, padding=k//2, flip_weight=False)``.

    A stride-2 transposed convolution with the weight as stored (``[O, I, k, k]`` passed as
    ``[I, O, k, k]``), then the FIR filter with gain 4. x: [N, I, H, W] -> [N, O, 2H, 2W].
    """
    kw = weight.shape[-1]
    fw = f.shape[-1]
    # NVIDIA's padding bookkeeping for up=2, padding=kw//2 (see module docstring).
    p = kw // 2
    px0 = p + (fw + 1) // 2 - (kw - 1)
    px1 = p + (fw - 2) // 2 - (kw - 2)
    pt = max(min(-px0, -px1), 0)
    y = F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=pt)
    return fir_filter2d(y, f, (px0 + pt, px1 + pt), gain=4.0)


# ----------------------------------------------------------------------------------------------
# Aspect (widescreen): widen the learned constant, crop the image


ASPECT_MIN, ASPECT_MAX = 0.25, 4.0  # width / height accepted by ``synthesis(..., aspect=)``
NOISE_EXTENSION_SEED = 0x5EED  # widened noise_const buffers draw their new area from this seed


def check_aspect(aspect: Any) -> float:
    """``aspect`` (width / height) as a float in [ASPECT_MIN, ASPECT_MAX], else one ValueError."""
    if isinstance(aspect, bool) or not isinstance(aspect, (int, float)) or not math.isfinite(aspect) \
            or not ASPECT_MIN <= aspect <= ASPECT_MAX:
        raise ValueError(f"aspect (width / height) must be a number in {ASPECT_MIN:g}..{ASPECT_MAX:g}, got {aspect!r}")
    return float(aspect)


def aspect_shape(resolution: int, aspect: float) -> tuple[int, int]:
    """The image ``(H, W)`` at ``aspect``: the short side is ``resolution``, the long side is
    ``resolution * aspect`` (or ``/ aspect``) rounded to an even number of pixels."""
    aspect = check_aspect(aspect)
    if aspect == 1.0:
        return resolution, resolution
    if aspect > 1.0:
        return resolution, max(2, 2 * round(resolution * aspect / 2))
    return max(2, 2 * round(resolution / aspect / 2)), resolution


def const_padding(resolution: int, aspect: float) -> tuple[int, int]:
    """Cells of the 4x4 constant added on each side ``(rows, columns)`` so that the synthesized
    image covers :func:`aspect_shape` (each cell becomes ``resolution / 4`` pixels); the same on
    both sides, so the original square stays in the middle."""
    h, w = aspect_shape(resolution, aspect)
    cell = resolution / 4
    return math.ceil((h / cell - 4) / 2), math.ceil((w / cell - 4) / 2)


def mirror_indices(n: int, pad: int) -> torch.Tensor:
    """Indices ``[n + 2 * pad]`` that extend ``0..n-1`` by mirroring at each end without repeating
    the edge (``2 1 | 0 1 2 3 | 2 1``), again and again for pads longer than ``n - 1``."""
    i = torch.arange(-pad, n + pad)
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    i = i.remainder(period)
    return torch.where(i < n, i, period - i)


def edge_indices(n: int, pad: int) -> torch.Tensor:
    """Indices ``[n + 2 * pad]`` that extend ``0..n-1`` by repeating the edge (``0 0 | 0 1 2 3 | 3 3``)."""
    return torch.arange(-pad, n + pad).clamp(0, n - 1)


def widen_const(const: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """The learned constant ``[C, h, w]`` extended by ``pad = (rows, columns)`` cells per side, so
    that values continue across the old border (no seam) and nothing is a tiled copy:

    * sideways it is mirrored outwards (:func:`mirror_indices`): the picture goes on left and
      right with the horizon at about the same height;
    * upwards and downwards its top and bottom rows continue (:func:`edge_indices`): what is at the
      top (a sky) goes on above, what is at the bottom (ground, water) below. Mirroring rows put a
      second, upside-down horizon into portrait frames of the default generator.

    ``[C, h + 2 * rows, w + 2 * columns]``; differentiable in ``const``."""
    py, px = pad
    if py == 0 and px == 0:
        return const
    rows = edge_indices(const.shape[-2], py).to(const.device)
    cols = mirror_indices(const.shape[-1], px).to(const.device)
    return const.index_select(-2, rows).index_select(-1, cols)


def widen_noise(noise: torch.Tensor, height: int, width: int, seed: int) -> torch.Tensor:
    """A ``noise_const`` buffer ``[h, w]`` widened to ``[height, width]``: the old buffer in the middle,
    fresh deterministic N(0, 1) samples (from ``seed``) around it, so the noise has the same
    statistics everywhere and repeats nothing."""
    h, w = noise.shape
    top, left = (height - h) // 2, (width - w) // 2
    gen = torch.Generator().manual_seed(seed)
    out = torch.randn([height, width], generator=gen)
    out[top: top + h, left: left + w] = noise.detach().float().cpu()
    return out.to(device=noise.device, dtype=noise.dtype)


def noise_seed(resolution: int, up: int) -> int:
    """The seed of one layer's widened noise (a layer is named by its resolution and up-sampling)."""
    return NOISE_EXTENSION_SEED + 16 * resolution + up


def crop_center(img: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The middle ``[..., height, width]`` of an image (a view)."""
    top, left = (img.shape[-2] - height) // 2, (img.shape[-1] - width) // 2
    if top == 0 and left == 0 and img.shape[-2] == height and img.shape[-1] == width:
        return img
    return img[..., top: top + height, left: left + width]


# ----------------------------------------------------------------------------------------------
# Layers


class FullyConnectedLayer(nn.Module):
    """Equalized-learning-rate linear layer (raw weight stored, gain applied at run time)."""

    def __init__(
        self,
        in_features: int,  # input features
        out_features: int,  # output features
        activation: str = "linear",  # 'linear' or 'lrelu' (slope 0.2, gain sqrt(2))
        lr_multiplier: float = 1.0,  # learning-rate multiplier of weight and bias
        bias_init: float = 0.0,  # initial bias value
    ) -> None:
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise ValueError(f"unknown activation {activation!r}")
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.lr_multiplier = lr_multiplier
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init)))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in] -> [N, out]
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias_gain != 1 else self.bias
        if self.activation == "linear":
            return torch.addmm(b.unsqueeze(0), x, w.t())
        x = x.matmul(w.t()) + b.unsqueeze(0)
        return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"activation={self.activation}, lr_multiplier={self.lr_multiplier:g}")


class MappingNetwork(nn.Module):
    """z -> W, broadcast to W+ [N, num_ws, w_dim], with truncation toward the tracked ``w_avg``."""

    def __init__(
        self,
        z_dim: int,  # input latent dimensionality
        w_dim: int,  # output latent dimensionality
        num_ws: int,  # number of W vectors to broadcast to
        num_layers: int = 8,  # fully connected layers
        hidden_dim: int = 512,  # width of the hidden layers
        lr_multiplier: float = 0.01,  # equalized-lr multiplier
        w_avg_beta: float = 0.995,  # decay of the W average tracked when update_emas
    ) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        features = [z_dim] + [hidden_dim] * (num_layers - 1) + [w_dim]
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features[idx], features[idx + 1], activation="lrelu",
                                        lr_multiplier=lr_multiplier)
            setattr(self, f"fc{idx}", layer)
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor,  # [N, z_dim]
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:  # [N, num_ws, w_dim]
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.z_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"mapping expects z of shape [N, {self.z_dim}], got {shape}")
        x = normalize_2nd_moment(z.to(torch.float32))
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)  # [N, w_dim]
        if update_emas:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])  # [N, num_ws, w_dim]
        if truncation_psi != 1:
            if truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x = x.clone()
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, w_avg_beta={self.w_avg_beta:g}"


def demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """1/||w * s|| per sample and output channel, as NVIDIA (eps 1e-8). weight [O,I,k,k], styles [N,I] -> [N,O]."""
    w2 = weight.square().sum(dim=[2, 3])  # [O, I]
    return (styles.square().matmul(w2.t()) + DEMOD_EPS).rsqrt()


class SynthesisLayer(nn.Module):
    """Modulated, demodulated 3x3 conv (optionally up-sampling x2) + noise + bias + lrelu."""

    def __init__(
        self,
        in_channels: int,  # input feature channels
        out_channels: int,  # output feature channels
        w_dim: int,  # W dimensionality
        resolution: int,  # output resolution of this layer
        kernel_size: int = 3,  # conv kernel size
        up: int = 1,  # 1 or 2
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # FIR taps for up-sampling
        conv_clamp: float | None = None,  # clamp output to +-X
    ) -> None:
        super().__init__()
        assert up in (1, 2)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.up = up
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self._wide_noise: dict[tuple[int, int], tuple[tuple[Any, ...], torch.Tensor]] = {}

    def const_noise(self, height: int, width: int) -> torch.Tensor:
        """``noise_const`` for an output of ``[height, width]``: the buffer itself at the square size,
        else the widened buffer (:func:`widen_noise`), cached per size until the buffer changes."""
        if height == self.resolution and width == self.resolution:
            return self.noise_const
        buf = self.noise_const
        token = (buf.data_ptr(), buf._version, buf.device, buf.dtype)
        hit = self._wide_noise.get((height, width))
        if hit is None or hit[0] != token:
            hit = (token, widen_noise(buf, height, width, noise_seed(self.resolution, self.up)))
            self._wide_noise[(height, width)] = hit
        return hit[1]

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        # x: [N, I, h/up, w/up], w: [N, w_dim] -> [N, O, h, w] (h = w = res unless widened)
        n = x.shape[0]
        styles = self.affine(w)  # [N, I]
        dcoefs = demodulation_coefficients(self.weight, styles)  # [N, O]
        x = x * styles.reshape(n, -1, 1, 1)
        if self.up == 2:
            x = upsample_conv2d(x, self.weight, self.resample_filter)
        else:
            x = F.conv2d(x, self.weight, padding=self.padding)
        x = x * dcoefs.reshape(n, -1, 1, 1)
        if noise_mode == "const":
            x = x + self.const_noise(x.shape[-2], x.shape[-1]) * self.noise_strength
        elif noise_mode == "random":
            x = x + torch.randn([n, 1, x.shape[-2], x.shape[-1]], device=x.device, dtype=x.dtype) * self.noise_strength
        x = F.leaky_relu(x + self.bias.reshape(1, -1, 1, 1), LRELU_SLOPE) * LRELU_GAIN
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"resolution={self.resolution}, up={self.up}, conv_clamp={self.conv_clamp}")


class ToRGBLayer(nn.Module):
    """1x1 modulated conv without demodulation (styles scaled by 1/sqrt(in_channels)) + bias."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:  # [N,I,H,W] -> [N,C,H,W]
        styles = self.affine(w) * self.weight_gain  # [N, I]
        x = x * styles.reshape(x.shape[0], -1, 1, 1)
        x = F.conv2d(x, self.weight, bias=self.bias)
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x

    def extra_repr(self) -> str:
        return f"in_channels={self.in_channels}, out_channels={self.out_channels}, conv_clamp={self.conv_clamp}"


class SynthesisBlock(nn.Module):
    """One resolution: [const | conv0 (up x2)] -> conv1 -> toRGB, adding to the up-sampled image."""

    def __init__(
        self,
        in_channels: int,  # 0 for the first (4x4) block
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.resolution = resolution
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution,
                                    resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)

    def forward(
        self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str = "const",
        const_pad: tuple[int, int] = (0, 0),
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # ws: [N, num_conv + 1, w_dim]; x: [N, in, h/2, w/2] or None; img: [N, C, h/2, w/2] or None;
        # const_pad: cells added to each side of the constant (first block only; see widen_const)
        if self.in_channels == 0:
            x = widen_const(self.const, const_pad).unsqueeze(0).expand(ws.shape[0], -1, -1, -1)  # [N, O, 4+, 4+]
            x = self.conv1(x, ws[:, 0], noise_mode)
        else:
            assert x is not None
            x = self.conv0(x, ws[:, 0], noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode)
        y = self.torgb(x, ws[:, self.num_conv])  # [N, C, res, res]
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, in_channels={self.in_channels}, out_channels={self.out_channels}"


class SynthesisNetwork(nn.Module):
    """W+ [N, num_ws, w_dim] -> image [N, C, res, res] in about [-1, 1]."""

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        self.w_dim = config.w_dim
        self.img_resolution = config.resolution
        self.img_channels = config.img_channels
        self.block_resolutions = config.block_resolutions
        self.num_ws = config.num_ws
        for res in self.block_resolutions:
            in_ch = config.channels(res // 2) if res > 4 else 0
            block = SynthesisBlock(in_ch, config.channels(res), config.w_dim, res, config.img_channels,
                                   resample_filter=config.resample_filter, conv_clamp=config.conv_clamp)
            setattr(self, f"b{res}", block)

    def check_ws(self, ws: Any) -> None:
        """Raise ValueError unless ws is a floating tensor of shape [N, num_ws, w_dim]."""
        check_ws(ws, self.num_ws, self.w_dim)

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", aspect: float = 1.0) -> torch.Tensor:
        """W+ -> image ``[N, C, H, W]``; ``aspect`` (width / height) other than 1 widens the constant
        (:func:`widen_const`) and crops the middle :func:`aspect_shape` of the wider image."""
        self.check_ws(ws)
        check_noise_mode(noise_mode)
        pad = const_padding(self.img_resolution, aspect)  # checks aspect
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block: SynthesisBlock = getattr(self, f"b{res}")
            # Each block's toRGB shares its w with the next block's conv0 (NVIDIA's indexing).
            x, img = block(x, img, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), noise_mode, pad)
            w_idx += block.num_conv
        assert img is not None
        return crop_center(img, *aspect_shape(self.img_resolution, aspect))

    def extra_repr(self) -> str:
        return f"w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"


def check_ws(ws: Any, num_ws: int, w_dim: int) -> None:
    """Raise ValueError unless ws is a floating tensor of shape [N, num_ws, w_dim]."""
    if not isinstance(ws, torch.Tensor):
        raise ValueError(f"synthesis expects ws as a torch.Tensor, got {type(ws).__name__}")
    if ws.ndim != 3 or ws.shape[1] != num_ws or ws.shape[2] != w_dim or ws.shape[0] < 1:
        raise ValueError(f"synthesis expects ws of shape [N, {num_ws}, {w_dim}], got {tuple(ws.shape)}")
    if not ws.is_floating_point():
        raise ValueError(f"synthesis expects floating-point ws, got {ws.dtype}")


def check_noise_mode(noise_mode: Any) -> None:
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z -> W+) then ``synthesis`` (W+ -> image)."""

    def __init__(self, config: StyleGAN2Config) -> None:
        super().__init__()
        if not isinstance(config, StyleGAN2Config):
            raise TypeError(f"Generator expects a StyleGAN2Config, got {type(config).__name__}")
        self.config = config
        self.z_dim = config.z_dim
        self.w_dim = config.w_dim
        self.img_resolution = config.resolution
        self.img_channels = config.img_channels
        self.synthesis = SynthesisNetwork(config)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(config.z_dim, config.w_dim, self.num_ws, config.mapping_layers,
                                      config.mapping_hidden_dim, config.mapping_lr_multiplier, config.w_avg_beta)

    def forward(
        self,
        z: torch.Tensor,  # [N, z_dim]
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        noise_mode: str = "const",
        aspect: float = 1.0,  # width / height of the image (see SynthesisNetwork.forward)
    ) -> torch.Tensor:  # [N, C, H, W]
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, aspect=aspect)

    def extra_repr(self) -> str:
        return f"z_dim={self.z_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, img_resolution={self.img_resolution}"


# ----------------------------------------------------------------------------------------------
# Native checkpoints


def save_generator(path: str | Path, G: Generator, metadata: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``G`` as PATH.safetensors + PATH.json (kind 'stylegan2')."""
    return save_network(path, G, G.config, KIND, metadata)


def load_generator(path: str | Path, device: str | torch.device = "cpu") -> Generator:
    """Load a native generator checkpoint; raises model.formats.CheckpointError on any problem."""
    G, _, _ = load_network(path, StyleGAN2Config, Generator, KIND, device=device)
    return G


# ----------------------------------------------------------------------------------------------
# Fast inference path
#
# The same arithmetic as the reference layers above, arranged for few, large operations:
# * every layer's styles come from one batched matmul over all layers, and every conv layer's
#   demodulation coefficients from a second one (instead of two small matmuls per layer);
# * the lrelu gain sqrt(2) is folded into the demodulation coefficients and into the bias (lrelu
#   is positively homogeneous), the const-mode noise into a per-layer bias map;
# * at batch 1 the styles and demodulation coefficients are folded into the (small) weight where
#   that is cheaper than scaling the activations; otherwise the input is scaled by the styles
#   and the output by the coefficients around one convolution with the shared weight;
# * the up-sampling FIR runs as a padded depthwise convolution (no separate pad pass).


_DTYPES = {torch.float32, torch.bfloat16, torch.float16}


class _FastConv(nn.Module):
    """One SynthesisLayer prepared for inference: weights pre-cast, noise and bias fused.

    ``forward(x, s, d)`` takes this layer's styles ``s`` [N, I] and demodulation coefficients
    ``d`` [N, O] (sqrt(2) folded in), computed for all layers at once by the owner.
    """

    def __init__(self, layer: SynthesisLayer, dtype: torch.dtype, memory_format: torch.memory_format) -> None:
        super().__init__()
        self.dtype = dtype
        self.memory_format = memory_format
        self.up = layer.up
        self.resolution = layer.resolution
        self.padding = layer.padding
        self.conv_clamp = layer.conv_clamp
        w = layer.weight.detach().float().clone()  # [O, I, k, k], a copy: the fast module is frozen
        out_ch, in_ch, kh, kw = w.shape
        self.in_channels, self.out_channels = in_ch, out_ch
        in_res = layer.resolution // layer.up
        # Batch-1 strategy: which tensor is cheaper to scale, the weight or the input?
        self.fold_weights = out_ch * in_ch * kh * kw <= in_ch * in_res * in_res
        wt = w.transpose(0, 1).contiguous() if self.up == 2 else w  # conv_transpose2d wants [I, O, k, k]
        self.register_buffer("weight_f32", wt)
        self.register_buffer("weight", wt.to(dtype).contiguous(memory_format=memory_format))
        f = layer.resample_filter.detach().float()
        self.fir_pad = (1, 1)
        if self.up == 2:
            fw = f.shape[-1]
            p = kw // 2
            self.fir_pad = (p + (fw + 1) // 2 - (kw - 1), p + (fw - 2) // 2 - (kw - 2))
            if min(self.fir_pad) < 0:
                raise ValueError("unsupported filter/kernel size combination for the fast path")
        self.register_buffer("fir", (f.flip([0, 1]) * 4.0)[None, None].repeat(out_ch, 1, 1, 1).to(dtype)
                             .contiguous(memory_format=memory_format))  # [O, 1, fh, fw]
        b = layer.bias.detach().float()[None, :, None, None]  # [1, O, 1, 1]
        ns = float(layer.noise_strength.detach())
        self.noise_strength_gain = ns * LRELU_GAIN
        self.register_buffer("bias_none", (b * LRELU_GAIN).to(dtype))
        # const mode: (noise_const * strength + bias) * sqrt(2), one map added after the conv
        self.register_buffer("bias_const", ((layer.noise_const.detach().float()[None, None] * ns + b) * LRELU_GAIN)
                             .to(dtype).contiguous(memory_format=memory_format))  # [1, O, H, W]
        # for widened frames (aspect != 1): the noise buffer and bias, to build bias_const at other sizes
        self.register_buffer("noise_const", layer.noise_const.detach().float().clone())  # [res, res]
        self.register_buffer("bias_f32", b.clone())  # [1, O, 1, 1]
        self.noise_strength = ns
        self.noise_seed = noise_seed(layer.resolution, layer.up)
        self._wide_const: dict[tuple[int, int, torch.device], torch.Tensor] = {}

    def const_add(self, height: int, width: int) -> torch.Tensor:
        """The (noise + bias) term of noise mode 'const' for an output of ``[height, width]``,
        built once per size (:func:`widen_noise`) and kept."""
        if height == self.resolution and width == self.resolution:
            return self.bias_const
        key = (height, width, self.bias_const.device)
        add = self._wide_const.get(key)
        if add is None:
            noise = widen_noise(self.noise_const, height, width, self.noise_seed)
            add = ((noise[None, None] * self.noise_strength + self.bias_f32) * LRELU_GAIN).to(self.dtype)
            add = add.contiguous(memory_format=self.memory_format)  # [1, O, height, width]
            self._wide_const[key] = add
        return add

    def forward(self, x: torch.Tensor, s: torch.Tensor, d: torch.Tensor, noise_mode: str,
                size: tuple[int, int] | None = None) -> torch.Tensor:
        # size: the output's (H, W) as Python ints (the square resolution unless widened); given
        # by the owner so that a TorchScript trace finds the cached noise maps by it
        n = x.shape[0]
        h, w = size if size is not None else (x.shape[-2] * self.up, x.shape[-1] * self.up)
        if noise_mode == "const":
            add = self.const_add(h, w)
        elif noise_mode == "random":
            noise = torch.randn([n, 1, h, w], device=x.device, dtype=torch.float32)
            add = (noise * self.noise_strength_gain).to(self.dtype) + self.bias_none
        else:
            add = self.bias_none
        if n == 1 and self.fold_weights:
            # conv(x * s, W) * d == conv(x, W * s * d) for one sample: scale the small weight.
            m = torch.outer(s[0], d[0]) if self.up == 2 else torch.outer(d[0], s[0])  # [I, O] | [O, I]
            wm = (self.weight_f32 * m[:, :, None, None]).to(self.dtype, memory_format=self.memory_format)
            y = self._conv(x, wm).add_(add)
        else:
            y = self._conv(x * s.to(self.dtype)[:, :, None, None], self.weight)
            y = torch.addcmul(add, y, d.to(self.dtype)[:, :, None, None])
        y = F.leaky_relu_(y, LRELU_SLOPE)
        if self.conv_clamp is not None:
            y = y.clamp_(-self.conv_clamp, self.conv_clamp)
        return y

    def _conv(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        if self.up == 2:
            y = F.conv_transpose2d(x, weight, stride=2)
            p0, p1 = self.fir_pad
            if p0 == p1:
                return F.conv2d(y, self.fir, padding=p0, groups=y.shape[1])
            return F.conv2d(F.pad(y, [p0, p1, p0, p1]), self.fir, groups=y.shape[1])
        return F.conv2d(x, weight, padding=self.padding)

    def extra_repr(self) -> str:
        return f"resolution={self.resolution}, up={self.up}, dtype={self.dtype}, fold_weights={self.fold_weights}"


class _FastToRGB(nn.Module):
    """ToRGBLayer for inference: the C x I weight is modulated per sample at batch 1 (cheap)."""

    def __init__(self, layer: ToRGBLayer, dtype: torch.dtype, memory_format: torch.memory_format) -> None:
        super().__init__()
        self.dtype = dtype
        self.memory_format = memory_format
        self.conv_clamp = layer.conv_clamp
        self.in_channels = layer.in_channels
        self.register_buffer("weight_f32", layer.weight.detach().float().clone())  # [C, I, 1, 1]
        self.register_buffer("weight", layer.weight.detach().to(dtype).clone())
        self.register_buffer("bias", layer.bias.detach().float().clone())  # [C]

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # s [N, I] (gain folded) -> [N, C, H, W] fp32
        n, _, h, w = x.shape
        wm = (self.weight_f32[None, :, :, 0, 0] * s[:, None, :]).to(self.dtype)  # [N, C, I] per sample
        if x.is_contiguous(memory_format=torch.channels_last):
            # NHWC memory is [N, H*W, I]: one batched matmul per sample's 1x1 conv, NCHW out.
            y = torch.bmm(wm, x.permute(0, 2, 3, 1).reshape(n, h * w, -1).transpose(1, 2)).view(n, -1, h, w)
        elif n == 1:
            y = F.conv2d(x, wm[0, :, :, None, None])
        else:
            y = F.conv2d(x * s.to(self.dtype)[:, :, None, None], self.weight)
        y = y.float().contiguous().add_(self.bias[None, :, None, None])
        if self.conv_clamp is not None:
            y = y.clamp_(-self.conv_clamp, self.conv_clamp)
        return y


class InferenceGenerator(nn.Module):
    """A frozen, fast copy of a :class:`Generator` for the live show (no autograd).

    Same interface as the generator for what the engine needs: ``mapping`` (the original fp32
    mapping network), ``synthesis(ws, noise_mode)`` returning float32 images, ``num_ws``,
    ``w_dim``, ``z_dim``, ``img_resolution``. Activations are computed in ``dtype``
    (bf16 / fp16 / fp32) and, when ``channels_last``, in NHWC memory layout.
    """

    def __init__(self, G: Generator, dtype: torch.dtype = torch.bfloat16, channels_last: bool = True,
                 jit: bool = False, graphs: bool = False) -> None:
        super().__init__()
        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of float32, bfloat16, float16; got {dtype}")
        self.config = G.config
        self.dtype = dtype
        self.jit = jit
        # CUDA: each (batch, noise_mode, const pad, image shape) replays a captured CUDA graph (one
        # launch per frame instead of ~10 per layer); ignored on other devices. Dropped on .to()
        self.graphs = graphs
        self._graphed: dict[tuple[Any, ...], tuple[Any, torch.Tensor, torch.Tensor]] = {}
        # (batch, noise_mode, const pad, image shape) -> frozen TorchScript trace of _synthesize;
        # dropped on .to()
        self._traced: dict[tuple[Any, ...], torch.jit.ScriptModule] = {}
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.num_ws, self.w_dim, self.z_dim = G.num_ws, G.w_dim, G.z_dim
        self.img_resolution, self.img_channels = G.img_resolution, G.img_channels
        self.mapping = G.mapping
        syn = G.synthesis
        self.register_buffer("const", syn.b4.const.detach().to(dtype)[None].contiguous(memory_format=self.memory_format))
        self.convs = nn.ModuleList()
        self.torgbs = nn.ModuleList()
        self.convs_per_block: list[int] = []
        # Every modulated layer in call order (convs of a block, then its toRGB) with its w index,
        # affine (gains folded) and squared-weight sums, zero-padded to the widest layer.
        affines: list[tuple[torch.Tensor, torch.Tensor]] = []
        w2s: list[torch.Tensor | None] = []
        w_index: list[int] = []
        w_idx = 0
        for res in syn.block_resolutions:
            block: SynthesisBlock = getattr(syn, f"b{res}")
            layers = [block.conv1] if block.in_channels == 0 else [block.conv0, block.conv1]
            for i, layer in enumerate(layers):
                self.convs.append(_FastConv(layer, dtype, self.memory_format))
                a = layer.affine
                affines.append((a.weight.detach().float() * a.weight_gain, a.bias.detach().float() * a.bias_gain))
                w2s.append(layer.weight.detach().float().square().sum(dim=[2, 3]).t())  # [I, O]
                w_index.append(w_idx + i)
            rgb = block.torgb
            self.torgbs.append(_FastToRGB(rgb, dtype, self.memory_format))
            a, g = rgb.affine, rgb.weight_gain
            affines.append((a.weight.detach().float() * a.weight_gain * g, a.bias.detach().float() * a.bias_gain * g))
            w2s.append(None)
            w_index.append(w_idx + block.num_conv)
            self.convs_per_block.append(len(layers))
            w_idx += block.num_conv
        i_max = max(w.shape[0] for w, _ in affines)
        o_max = max(w.shape[1] for w in w2s if w is not None)
        aw = torch.zeros(len(affines), self.w_dim, i_max)
        ab = torch.zeros(len(affines), 1, i_max)
        w2 = torch.zeros(len(affines), i_max, o_max)
        for k, ((weight, bias), sq) in enumerate(zip(affines, w2s)):
            aw[k, :, : weight.shape[0]] = weight.t()
            ab[k, 0, : bias.shape[0]] = bias
            if sq is not None:
                w2[k, : sq.shape[0], : sq.shape[1]] = sq
        self.register_buffer("affine_w", aw)  # [L, w_dim, I_max]
        self.register_buffer("affine_b", ab)  # [L, 1, I_max]
        self.register_buffer("w2", w2)  # [L, I_max, O_max]
        self.register_buffer("w_index", torch.tensor(w_index, dtype=torch.long))  # [L]
        # The skip image is up-sampled by two small matmuls per block (the FIR is separable), or,
        # from BILINEAR_SKIP_MIN px and for NVIDIA's filter, by bilinear interpolation (the matrices
        # grow with the square of the size: 3.6 ms a frame at 512 px).
        self._resample_taps = G.config.resample_filter
        self._bilinear_skip = upsample_is_bilinear(self._resample_taps)
        self._up_matrices: dict[tuple[int, torch.device], torch.Tensor] = {}
        self._wide_const: dict[tuple[tuple[int, int], torch.device], torch.Tensor] = {}
        self.eval()

    def styles(self, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Styles [L, N, I_max] of every modulated layer and demodulation coefficients [L, N, O_max]
        (times the lrelu gain), fp32, in two batched matmuls."""
        w = ws.index_select(1, self.w_index).transpose(0, 1)  # [L, N, w_dim]
        s = torch.baddbmm(self.affine_b, w, self.affine_w)
        d = (s.square().bmm(self.w2) + DEMOD_EPS).rsqrt_().mul_(LRELU_GAIN)
        return s, d

    def const_for(self, pad: tuple[int, int]) -> torch.Tensor:
        """The constant ``[1, C, 4+, 4+]`` widened by ``pad`` cells (:func:`widen_const`), kept per pad."""
        if pad == (0, 0):
            return self.const
        key = (pad, self.const.device)
        const = self._wide_const.get(key)
        if const is None:
            const = widen_const(self.const[0], pad)[None].contiguous(memory_format=self.memory_format)
            self._wide_const[key] = const
        return const

    def _up_matrix(self, size: int) -> torch.Tensor:
        """:func:`upsample_matrix` ``[2 * size, size]`` on this module's device, kept per size."""
        key = (size, self.const.device)
        a = self._up_matrices.get(key)
        if a is None:
            a = self._up_matrices[key] = upsample_matrix(self._resample_taps, size).to(self.const.device)
        return a

    def _upsample_image(self, img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """[N, C, H, W] -> [N, C, 2H, 2W]; ``size`` = (H, W) as Python ints."""
        if self._bilinear_skip and min(size) >= BILINEAR_SKIP_MIN:
            return upsample_bilinear_fir(img)
        return torch.matmul(torch.matmul(self._up_matrix(size[0]), img), self._up_matrix(size[1]).t())

    @torch.no_grad()
    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const", aspect: float = 1.0) -> torch.Tensor:
        """W+ [N, num_ws, w_dim] -> float32 image [N, C, H, W] (``aspect`` as SynthesisNetwork.forward)."""
        check_ws(ws, self.num_ws, self.w_dim)
        check_noise_mode(noise_mode)
        pad = const_padding(self.img_resolution, aspect)  # checks aspect
        shape = aspect_shape(self.img_resolution, aspect)
        ws = ws.to(device=self.const.device, dtype=torch.float32)
        key = (ws.shape[0], noise_mode, pad, shape)
        if self.graphs and ws.is_cuda:
            return self._replay(key, ws)
        if not self.jit:
            return self._synthesize(ws, noise_mode, pad, shape)
        traced = self._traced.get(key)
        if traced is None:
            try:
                traced = self._traced[key] = self._trace(ws, noise_mode, pad, shape)
            except Exception as exc:  # TorchScript is deprecated in torch 2.x: run eagerly if it fails
                log.warning("tracing the synthesis failed (%s); running it eagerly", exc)
                self.jit = False
                return self._synthesize(ws, noise_mode, pad, shape)
        return traced(ws)

    def _trace(self, ws: torch.Tensor, noise_mode: str, pad: tuple[int, int],
               shape: tuple[int, int]) -> torch.jit.ScriptModule:
        """A frozen TorchScript trace of :meth:`_synthesize` for this batch size, noise mode and aspect
        (about 0.1-0.2 s; the traced call was 6-11% faster on a CPU: no Python between the ops,
        weights as constants, convolutions prepacked by ``optimize_for_inference``)."""
        import warnings

        # One eager call first fills the per-size caches (widened constant and noise maps, the
        # up-sampling matrices), so the trace takes them as constants instead of recording the
        # ops that build them (the widened noise's seeded randn would be redrawn every call).
        self._synthesize(ws, noise_mode, pad, shape)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the batch-1 branch is baked in: intended
            warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.x points to torch.compile (see README)
            traced = torch.jit.trace(_Synthesize(self, noise_mode, pad, shape).eval(), (ws,), check_trace=False)
            return torch.jit.optimize_for_inference(torch.jit.freeze(traced))

    def _replay(self, key: tuple[Any, ...], ws: torch.Tensor) -> torch.Tensor:
        """:meth:`_synthesize` for ``key`` as a CUDA graph, captured on its first call (after two
        eager warm-up calls that fill the per-size caches); ``ws`` is copied into the graph's
        static input and the output cloned (the next replay overwrites it). If the capture fails,
        this generator logs why once and runs eagerly from then on."""
        entry = self._graphed.get(key)
        if entry is None:
            _, noise_mode, pad, shape = key
            try:
                static_ws = ws.clone()
                side = torch.cuda.Stream(device=ws.device)
                side.wait_stream(torch.cuda.current_stream(ws.device))
                with torch.cuda.stream(side):
                    for _ in range(2):
                        self._synthesize(static_ws, noise_mode, pad, shape)
                torch.cuda.current_stream(ws.device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    static_out = self._synthesize(static_ws, noise_mode, pad, shape)
            except Exception as exc:  # an op that cannot be captured: run eagerly
                log.warning("capturing the synthesis as a CUDA graph failed (%s); running it eagerly", exc)
                self.graphs = False
                return self._synthesize(ws, noise_mode, pad, shape)
            entry = self._graphed[key] = (graph, static_ws, static_out)
        graph, static_ws, static_out = entry
        static_ws.copy_(ws)
        graph.replay()
        return static_out.clone()

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> "InferenceGenerator":
        self._traced = {}  # traces hold the old tensors as constants
        self._graphed = {}  # so do captured graphs
        return super()._apply(fn, *args, **kwargs)

    def _synthesize(self, ws: torch.Tensor, noise_mode: str, pad: tuple[int, int] = (0, 0),
                    shape: tuple[int, int] | None = None) -> torch.Tensor:
        """The synthesis proper: ``pad`` cells widen the constant, ``shape`` is the middle cropped."""
        s, d = self.styles(ws)
        x = self.const_for(pad).expand(ws.shape[0], -1, -1, -1)  # the input (widened when pad)
        rows, cols = 4 + 2 * pad[0], 4 + 2 * pad[1]  # cells of the constant; each is res/4 px at res
        img: torch.Tensor | None = None
        c = k = 0
        for b, count in enumerate(self.convs_per_block):
            for _ in range(count):
                conv: _FastConv = self.convs[c]
                size = (rows * conv.resolution // 4, cols * conv.resolution // 4)
                x = conv(x, s[k, :, : conv.in_channels], d[k, :, : conv.out_channels], noise_mode, size)
                c += 1
                k += 1
            rgb: _FastToRGB = self.torgbs[b]
            y = rgb(x, s[k, :, : rgb.in_channels])
            k += 1
            img = y if img is None else self._upsample_image(img, (size[0] // 2, size[1] // 2)).add_(y)
        assert img is not None
        if pad != (0, 0) and shape is not None:
            img = crop_center(img, *shape).contiguous()
        return img

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", aspect: float = 1.0) -> torch.Tensor:
        return self.synthesis(ws, noise_mode, aspect)


class _Synthesize(nn.Module):
    """``gen._synthesize(ws, noise_mode, pad, shape)`` as a module's forward, for torch.jit.trace."""

    def __init__(self, gen: InferenceGenerator, noise_mode: str, pad: tuple[int, int], shape: tuple[int, int]) -> None:
        super().__init__()
        self.gen = gen
        self.noise_mode = noise_mode
        self.pad = pad
        self.shape = shape

    def forward(self, ws: torch.Tensor) -> torch.Tensor:
        return self.gen._synthesize(ws, self.noise_mode, self.pad, self.shape)


def prepare_for_inference(
    G: Generator, dtype: torch.dtype = torch.bfloat16, channels_last: bool = True, jit: bool = False,
    graphs: bool = False,
) -> InferenceGenerator:
    """A fast frozen copy of ``G`` (same device) for real-time synthesis; see InferenceGenerator.

    ``jit``: run each (batch size, noise mode) as a frozen TorchScript trace, made on its first
    call; the same arithmetic, 6-11% faster per frame on a CPU. ``graphs``: on CUDA, replay each
    (batch size, noise mode, aspect) as a CUDA graph captured on its first call.

    bf16 + channels_last was about 3x faster than fp32 at 256 px on an AVX-512 CPU. Callers on
    CPU should also call ``torch.set_flush_denormal(True)`` once (a process-wide setting, so it is
    not done here).
    """
    device = next(G.parameters()).device
    return InferenceGenerator(G, dtype=dtype, channels_last=channels_last, jit=jit, graphs=graphs).to(device)
