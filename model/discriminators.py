"""Discriminators: StyleGAN2's residual image discriminator and a 3D patch video discriminator.

* :class:`Discriminator` is the math of NVIDIA's stylegan2-ada-pytorch ``Discriminator`` with the
  'resnet' architecture (the one StyleGAN2 config F uses): a 1x1 ``fromrgb`` at full resolution,
  then per resolution two 3x3 equalized-lr convolutions (the second FIR-down-sampling by 2) and a
  1x1 down-sampling residual branch, both scaled by sqrt(0.5); at 4x4 an epilogue of
  minibatch-standard-deviation, a 3x3 conv, a fully connected layer and the output layer. Weights
  are stored raw with the equalized-learning-rate gains applied at run time, and the state-dict
  names are NVIDIA's (``b64.conv0.weight``, ``b4.fc.weight``, ``b4.out.bias``, ...).
* :class:`VideoDiscriminator` is a 3D convolutional patch discriminator in the spirit of
  MoCoGAN-HD's video discriminator: equalized-lr 3D convolutions strided by 2 in space (and, where
  asked, in time) with leaky ReLU, ending in a 1-channel 3D conv, so each output logit judges one
  space-time patch of the clip: ``[N, C, T, H, W] -> [N, 1, t', h', w']``.

Both are plain ``nn.Module``s rebuilt from a config dataclass and saved as safetensors + JSON via
:mod:`model.formats`. The low-level FIR ops and the fully connected layer come from
:mod:`model.stylegan2`; the down-sampling ones (missing there) are defined here.
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
from model.stylegan2 import LRELU_GAIN, LRELU_SLOPE, FullyConnectedLayer, fir_filter2d, setup_filter

log = logging.getLogger(__name__)

KIND = "stylegan2_discriminator"
VIDEO_KIND = "video_patch_discriminator"
ARCHITECTURES = ("resnet",)


def _check_positive_int(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{owner}.{name} must be a positive integer, got {value!r}")


def _check_clamp(owner: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{owner}.conv_clamp must be a positive number or None, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------------------------
# Configs


@dataclass
class DiscriminatorConfig:
    """Every hyperparameter of the image discriminator; saved beside the weights."""

    resolution: int = 256  # input image resolution (a power of two)
    img_channels: int = 3  # input colour channels
    channel_base: int = 32768  # channels at resolution r = min(channel_base // r, channel_max)
    channel_max: int = 512  # maximum channels in any layer
    mbstd_group_size: int = 4  # minibatch-stddev group size (reduced to a divisor of the batch)
    mbstd_num_channels: int = 1  # minibatch-stddev feature channels
    architecture: str = "resnet"  # only NVIDIA's 'resnet' (StyleGAN2 config F)
    conv_clamp: float | None = None  # clamp conv outputs to +-X (256 keeps fp16/bf16 safe)
    resample_filter: tuple[int, ...] = (1, 3, 3, 1)  # 1-D low-pass taps for down-sampling

    def __post_init__(self) -> None:
        owner = "DiscriminatorConfig"
        for name in ("resolution", "img_channels", "channel_base", "channel_max", "mbstd_group_size",
                     "mbstd_num_channels"):
            _check_positive_int(owner, name, getattr(self, name))
        r = self.resolution
        if r < 4 or r > 1024 or r & (r - 1):
            raise ValueError(f"{owner}.resolution must be a power of two in 4..1024, got {r}")
        if self.channel_base // r < 1:
            raise ValueError(f"{owner}.channel_base {self.channel_base} gives 0 channels at resolution {r}")
        if self.channels(4) % self.mbstd_num_channels:
            raise ValueError(f"{owner}.mbstd_num_channels {self.mbstd_num_channels} must divide the "
                             f"{self.channels(4)} channels at 4x4")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"{owner}.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")
        self.conv_clamp = _check_clamp(owner, self.conv_clamp)
        taps = tuple(self.resample_filter)
        if not taps or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
                               for t in taps) or sum(taps) == 0:
            raise ValueError(f"{owner}.resample_filter must be finite numbers with a non-zero sum, got {taps!r}")
        self.resample_filter = taps

    @property
    def block_resolutions(self) -> list[int]:
        """Resolutions of the down-sampling blocks, input first: [res, res/2, ..., 8]."""
        return [2**i for i in range(int(math.log2(self.resolution)), 2, -1)]

    def channels(self, res: int) -> int:
        """Feature channels at resolution ``res``."""
        return min(self.channel_base // res, self.channel_max)


@dataclass
class VideoDiscriminatorConfig:
    """Every hyperparameter of the 3D patch video discriminator; saved beside the weights."""

    img_channels: int = 3  # input colour channels
    channels: tuple[int, ...] = (64, 128, 256)  # output channels of each strided 3D conv layer
    time_strides: tuple[int, ...] = (1, 2, 2)  # temporal stride of each layer (1 or 2)
    kernel_time: int = 3  # temporal kernel size of every layer (odd; padded to keep 'same')
    kernel_space: int = 4  # spatial kernel size of the strided layers (4 with padding 1 halves H, W)
    conv_clamp: float | None = None  # clamp conv outputs to +-X

    def __post_init__(self) -> None:
        owner = "VideoDiscriminatorConfig"
        _check_positive_int(owner, "img_channels", self.img_channels)
        self.channels = tuple(self.channels)
        self.time_strides = tuple(self.time_strides)
        if not self.channels:
            raise ValueError(f"{owner}.channels must name at least one layer")
        for c in self.channels:
            _check_positive_int(owner, "channels[...]", c)
        if len(self.time_strides) != len(self.channels) or any(s not in (1, 2) for s in self.time_strides):
            raise ValueError(f"{owner}.time_strides must give 1 or 2 for each of the {len(self.channels)} layers, "
                             f"got {self.time_strides!r}")
        _check_positive_int(owner, "kernel_time", self.kernel_time)
        if self.kernel_time % 2 == 0:
            raise ValueError(f"{owner}.kernel_time must be odd, got {self.kernel_time}")
        if self.kernel_space not in (2, 4, 6):
            raise ValueError(f"{owner}.kernel_space must be 2, 4 or 6 (even, halving H and W), got {self.kernel_space!r}")
        self.conv_clamp = _check_clamp(owner, self.conv_clamp)

    @property
    def min_size(self) -> int:
        """Smallest height/width the network accepts (each layer halves it)."""
        return 2 ** len(self.channels)

    def output_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """``(t', h', w')`` of the logit map for a clip of ``frames`` x ``height`` x ``width``."""
        t, h, w = frames, height, width
        for s in self.time_strides:
            t = (t - 1) // s + 1  # kernel_time odd, padding kernel_time // 2
            h, w = h // 2, w // 2
        return t, h, w


# ----------------------------------------------------------------------------------------------
# Functional pieces (FIR down-sampling, the counterpart of model.stylegan2.upsample2d)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """NVIDIA ``upfirdn2d.downsample2d(x, f)`` (down=2): pad, FIR (gain 1), keep every 2nd sample.

    x: [N, C, H, W] -> [N, C, H/2, W/2]. The pad ``((fw-1)//2, (fw-2)//2)`` is NVIDIA's for down=2.
    """
    fw = f.shape[-1]
    p0, p1 = (fw - 1) // 2, (fw - 2) // 2
    c = x.shape[1]
    x = F.pad(x, [p0, p1, p0, p1])
    k = f.flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, *f.shape)  # [C, 1, kh, kw] depthwise
    return F.conv2d(x, k, stride=2, groups=c)


def downsample_conv2d(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor, padding: int) -> torch.Tensor:
    """NVIDIA ``conv2d_resample(x, w, f, down=2, padding)``: FIR low-pass, then a stride-2 conv.

    x: [N, I, H, W]; weight: [O, I, k, k] -> [N, O, H/2, W/2]. A 1x1 kernel down-samples first
    (cheaper, the same result).
    """
    kw = weight.shape[-1]
    fw = f.shape[-1]
    if kw == 1:
        return F.conv2d(downsample2d(x, f), weight)
    p0 = padding + (fw - 1) // 2
    p1 = padding + (fw - 2) // 2
    x = fir_filter2d(x, f, (p0, p1), gain=1.0)
    return F.conv2d(x, weight, stride=2)


# ----------------------------------------------------------------------------------------------
# Layers


class Conv2dLayer(nn.Module):
    """Equalized-lr 2D conv (optionally FIR-down-sampling by 2) + bias + activation (+ clamp)."""

    def __init__(
        self,
        in_channels: int,  # input feature channels
        out_channels: int,  # output feature channels
        kernel_size: int,  # odd kernel size
        bias: bool = True,  # add a learned bias
        activation: str = "linear",  # 'linear' or 'lrelu' (slope 0.2, gain sqrt(2))
        down: int = 1,  # 1 or 2
        resample_filter: Sequence[float] = (1, 3, 3, 1),  # FIR taps for down-sampling
        conv_clamp: float | None = None,  # clamp outputs to +-X (scaled by the call's gain)
    ) -> None:
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise ValueError(f"unknown activation {activation!r}")
        if down not in (1, 2):
            raise ValueError(f"down must be 1 or 2, got {down}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.act_gain = LRELU_GAIN if activation == "lrelu" else 1.0
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:  # [N,I,H,W] -> [N,O,H/down,W/down]
        w = self.weight * self.weight_gain
        if self.down == 2:
            x = downsample_conv2d(x, w.to(x.dtype), self.resample_filter, self.padding)
        else:
            x = F.conv2d(x, w.to(x.dtype), padding=self.padding)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).reshape(1, -1, 1, 1)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, LRELU_SLOPE)
        act_gain = self.act_gain * gain
        if act_gain != 1:
            x = x * act_gain
        if self.conv_clamp is not None:
            clamp = self.conv_clamp * gain
            x = x.clamp(-clamp, clamp)
        return x

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, activation={self.activation}, "
                f"down={self.down}, bias={self.bias is not None}")


class DiscriminatorBlock(nn.Module):
    """One resolution of the residual discriminator: [fromrgb] -> conv0 -> conv1 (down), + skip (down)."""

    def __init__(
        self,
        in_channels: int,  # 0 for the first (full resolution) block, which reads the image
        tmp_channels: int,  # channels inside the block
        out_channels: int,  # channels after down-sampling
        img_channels: int,  # image colour channels
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = in_channels
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2,
                                 resample_filter=resample_filter, conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2, resample_filter=resample_filter)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, in|img, H, W] -> [N, out, H/2, W/2]
        if self.in_channels == 0:
            x = self.fromrgb(x)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv0(x)
        x = self.conv1(x, gain=math.sqrt(0.5))
        return y + x


class MinibatchStdLayer(nn.Module):
    """Appends the standard deviation of features across groups of samples (StyleGAN's mbstd).

    The group size is ``min(group_size, N)`` reduced to the largest divisor of ``N``, so any batch
    size works (NVIDIA asserts divisibility instead).
    """

    def __init__(self, group_size: int, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, H, W] -> [N, C + F, H, W]
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)  # [G, n, F, c, H, W]
        y = y - y.mean(dim=0)
        y = y.square().mean(dim=0)  # variance over the group
        y = (y + 1e-8).sqrt()
        y = y.mean(dim=[2, 3, 4])  # [n, F]
        y = y.reshape(-1, f, 1, 1).repeat(g, 1, h, w)  # [N, F, H, W]
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"


class DiscriminatorEpilogue(nn.Module):
    """At 4x4: mbstd -> 3x3 conv -> fully connected -> one logit per sample."""

    def __init__(self, in_channels: int, mbstd_group_size: int, mbstd_num_channels: int,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * 4 * 4, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, C, 4, 4] -> [N, 1]
        x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1).float())
        return self.out(x)


class Discriminator(nn.Module):
    """StyleGAN2 residual discriminator: images [N, C, res, res] in [-1, 1] -> logits [N]."""

    def __init__(self, config: DiscriminatorConfig) -> None:
        super().__init__()
        if not isinstance(config, DiscriminatorConfig):
            raise TypeError(f"Discriminator expects a DiscriminatorConfig, got {type(config).__name__}")
        self.config = config
        self.img_resolution = config.resolution
        self.img_channels = config.img_channels
        self.block_resolutions = config.block_resolutions
        for res in self.block_resolutions:
            in_ch = config.channels(res) if res < config.resolution else 0
            block = DiscriminatorBlock(in_ch, config.channels(res), config.channels(res // 2), config.img_channels,
                                       resample_filter=config.resample_filter, conv_clamp=config.conv_clamp)
            setattr(self, f"b{res}", block)
        self.b4 = DiscriminatorEpilogue(config.channels(4), config.mbstd_group_size, config.mbstd_num_channels,
                                        conv_clamp=config.conv_clamp)

    def check_images(self, img: Any) -> None:
        """Raise ValueError unless ``img`` is a float tensor [N, C, res, res] this network reads."""
        r, c = self.img_resolution, self.img_channels
        if not isinstance(img, torch.Tensor):
            raise ValueError(f"Discriminator expects images as a torch.Tensor, got {type(img).__name__}")
        if img.ndim != 4 or img.shape[0] < 1 or tuple(img.shape[1:]) != (c, r, r):
            raise ValueError(f"Discriminator expects images of shape [N, {c}, {r}, {r}], got {tuple(img.shape)}")
        if not img.is_floating_point():
            raise ValueError(f"Discriminator expects floating-point images, got {img.dtype}")

    def forward(self, img: torch.Tensor) -> torch.Tensor:  # [N, C, res, res] -> [N]
        self.check_images(img)
        x = img
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x)
        return self.b4(x).squeeze(1).float()

    def extra_repr(self) -> str:
        c = self.config
        return f"resolution={c.resolution}, channel_base={c.channel_base}, channel_max={c.channel_max}"


class Conv3dLayer(nn.Module):
    """Equalized-lr 3D conv with bias, stride and 'same'-style padding, + optional leaky ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int],  # (kt, kh, kw)
        stride: tuple[int, int, int] = (1, 1, 1),
        padding: tuple[int, int, int] = (0, 0, 0),
        activation: str = "lrelu",
        conv_clamp: float | None = None,
    ) -> None:
        super().__init__()
        if activation not in ("linear", "lrelu"):
            raise ValueError(f"unknown activation {activation!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.weight_gain = 1 / math.sqrt(in_channels * kernel[0] * kernel[1] * kernel[2])
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, *kernel]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, I, T, H, W] -> [N, O, T', H', W']
        w = (self.weight * self.weight_gain).to(x.dtype)
        x = F.conv3d(x, w, self.bias.to(x.dtype), stride=self.stride, padding=self.padding)
        if self.activation == "lrelu":
            x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
        if self.conv_clamp is not None:
            x = x.clamp(-self.conv_clamp, self.conv_clamp)
        return x

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, kernel={self.kernel}, "
                f"stride={self.stride}, padding={self.padding}, activation={self.activation}")


class VideoDiscriminator(nn.Module):
    """3D patch discriminator: clips [N, C, T, H, W] in [-1, 1] -> patch logits [N, 1, t', h', w'].

    Layer i: equalized-lr Conv3d, kernel (kernel_time, kernel_space, kernel_space), stride
    (time_strides[i], 2, 2), leaky ReLU; then a 3x3x3 Conv3d to one channel, no activation. Each
    logit sees a space-time patch; the adversarial loss averages over them.
    """

    def __init__(self, config: VideoDiscriminatorConfig) -> None:
        super().__init__()
        if not isinstance(config, VideoDiscriminatorConfig):
            raise TypeError(f"VideoDiscriminator expects a VideoDiscriminatorConfig, got {type(config).__name__}")
        self.config = config
        self.img_channels = config.img_channels
        kt, ks = config.kernel_time, config.kernel_space
        pad = (kt // 2, (ks - 2) // 2, (ks - 2) // 2)  # spatial: (H + 2p - k)/2 + 1 = H/2 for even k
        layers: list[nn.Module] = []
        in_ch = config.img_channels
        for ch, st in zip(config.channels, config.time_strides):
            layers.append(Conv3dLayer(in_ch, ch, (kt, ks, ks), stride=(st, 2, 2), padding=pad,
                                      conv_clamp=config.conv_clamp))
            in_ch = ch
        self.layers = nn.ModuleList(layers)
        self.out = Conv3dLayer(in_ch, 1, (3, 3, 3), padding=(1, 1, 1), activation="linear")

    def check_clips(self, clips: Any) -> None:
        """Raise ValueError unless ``clips`` is a float tensor [N, C, T, H, W] large enough."""
        c, m = self.img_channels, self.config.min_size
        if not isinstance(clips, torch.Tensor):
            raise ValueError(f"VideoDiscriminator expects clips as a torch.Tensor, got {type(clips).__name__}")
        if clips.ndim != 5 or clips.shape[0] < 1 or clips.shape[1] != c or clips.shape[2] < 1:
            raise ValueError(f"VideoDiscriminator expects clips of shape [N, {c}, T, H, W], got {tuple(clips.shape)}")
        if clips.shape[3] < m or clips.shape[4] < m:
            raise ValueError(f"VideoDiscriminator needs frames of at least {m}x{m} pixels "
                             f"({len(self.config.channels)} halvings), got {tuple(clips.shape[3:])}")
        if not clips.is_floating_point():
            raise ValueError(f"VideoDiscriminator expects floating-point clips, got {clips.dtype}")

    def forward(self, clips: torch.Tensor) -> torch.Tensor:  # [N, C, T, H, W] -> [N, 1, t', h', w']
        self.check_clips(clips)
        x = clips
        for layer in self.layers:
            x = layer(x)
        return self.out(x).float()

    def extra_repr(self) -> str:
        c = self.config
        return f"channels={c.channels}, time_strides={c.time_strides}"


# ----------------------------------------------------------------------------------------------
# Native checkpoints


def save_discriminator(path: str | Path, D: Discriminator, metadata: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``D`` as PATH.safetensors + PATH.json (kind 'stylegan2_discriminator')."""
    return save_network(path, D, D.config, KIND, metadata)


def load_discriminator(path: str | Path, device: str | torch.device = "cpu") -> Discriminator:
    """Load a native image discriminator; raises model.formats.CheckpointError on any problem."""
    D, _, _ = load_network(path, DiscriminatorConfig, Discriminator, KIND, device=device)
    return D


def save_video_discriminator(
    path: str | Path, D: VideoDiscriminator, metadata: Mapping[str, Any] | None = None
) -> tuple[Path, Path]:
    """Write ``D`` as PATH.safetensors + PATH.json (kind 'video_patch_discriminator')."""
    return save_network(path, D, D.config, VIDEO_KIND, metadata)


def load_video_discriminator(path: str | Path, device: str | torch.device = "cpu") -> VideoDiscriminator:
    """Load a native video discriminator; raises model.formats.CheckpointError on any problem."""
    D, _, _ = load_network(path, VideoDiscriminatorConfig, VideoDiscriminator, VIDEO_KIND, device=device)
    return D
