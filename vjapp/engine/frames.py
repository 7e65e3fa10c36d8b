"""W+ -> uint8 RGB frames: the generator's fast synthesis path, resizing, conversion."""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from model.generators import AnyGenerator, prepare_generator, supports_camera
from model.stylegan3 import camera_matrix
from vjapp.engine.controls import aspect_ratio, frame_shape

log = logging.getLogger(__name__)


MPS_ABSENT = ("the Apple-silicon GPU (MPS) was asked for but is not available here: it needs a Mac with "
              "Apple silicon, macOS 12.3 or later and a torch build with MPS (the macOS arm64 wheel)")


def mps_available() -> bool:
    """Whether torch can use an Apple-silicon GPU (Metal Performance Shaders) here."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when there is one, else the Apple-silicon GPU (MPS), else the CPU.

    On MPS, ops that Metal lacks run on the CPU (``PYTORCH_ENABLE_MPS_FALLBACK=1``, set by
    :func:`vjapp.cli.main` before torch loads), so a missing kernel slows a frame, never stops it.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if mps_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was asked for but no CUDA GPU is available")
    if device.type == "mps" and not mps_available():
        raise RuntimeError(MPS_ABSENT)
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (stage timings on asynchronous devices are true then)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bf16 on CPU (about 3x faster than fp32 here), fp16 on CUDA and MPS."""
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.bfloat16
    if name not in table:
        raise ValueError(f"dtype must be one of auto, {', '.join(table)}; got {name!r}")
    return table[name]


class FrameRenderer:
    """Synthesizes frames from W+ with a prepared (pre-cast, channels-last) generator copy
    (StyleGAN3: the generator itself, in float32, seen through its camera).

    ``size`` is the short side of the frames; ``aspect`` (an ``ASPECTS`` entry of the controls)
    their shape, synthesized natively by the generator (``synthesis(..., aspect=)``) and then
    scaled so the short side is ``size``.
    """

    def __init__(self, G: AnyGenerator, device: torch.device, dtype: torch.dtype, size: int | None = None,
                 native_size: int | None = None) -> None:
        self.device = device
        self.dtype = dtype
        # "native": the bundle's display size (the generator's resolution unless the bundle upsamples)
        self.native_size = int(native_size or G.img_resolution)
        # StyleGAN2 on a CPU: each batch size runs as a frozen TorchScript trace (6-11% faster per
        # frame); on CUDA as a captured CUDA graph (one launch per frame)
        self.fast = prepare_generator(G, dtype=dtype, channels_last=True, jit=device.type == "cpu",
                                      graphs=device.type == "cuda").to(device)
        self.size = size or self.native_size
        self.has_camera = supports_camera(self.fast)
        self._camera: tuple[float, float, float] | None = None
        self.aspect = "1:1"

    def set_camera(self, x: float = 0.0, y: float = 0.0, rotate: float = 0.0) -> None:
        """Move the camera inside the picture (StyleGAN3; a no-op for StyleGAN2). Cheap per frame."""
        if self.has_camera and (x, y, rotate) != self._camera:
            self.fast.set_camera(translate=(x, y), rotate=rotate)
            self._camera = (x, y, rotate)

    def set_size(self, size: int | str | None) -> None:
        self.size = self.native_size if size in (None, "native") else int(size)

    def set_aspect(self, aspect: str) -> None:
        """``"1:1"``, ``"16:9"``, ``"4:3"`` or ``"9:16"`` (ControlError otherwise)."""
        aspect_ratio(aspect)
        self.aspect = aspect

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the frames now."""
        return frame_shape(self.size, self.aspect)

    @torch.no_grad()
    def images(self, ws: torch.Tensor, noise_mode: str = "const", aspect: str | None = None,
               cameras: Sequence[tuple[float, float, float]] | None = None,
               channels_last: bool = False) -> torch.Tensor:
        """ws ``[N, num_ws, w_dim]`` -> float images ``[N, 3, H, W]`` in [-1, 1] of :attr:`shape`
        (of ``aspect`` instead of the renderer's, when given: e.g. square for CLIP). ``cameras``: one
        ``(x, y, rotate)`` per image (StyleGAN3; ignored by generators without a camera). With
        ``channels_last`` in NHWC memory (the same values: resizing and the conversion to uint8
        frames were both about 2x faster on a CPU in that layout)."""
        aspect = aspect or self.aspect
        ratio = aspect_ratio(aspect)
        ws = ws.to(self.device)
        kwargs: dict = {} if ratio == 1.0 else {"aspect": ratio}
        if cameras is not None and self.has_camera:
            kwargs["camera"] = torch.stack([camera_matrix((x, y), r) for x, y, r in cameras]).to(self.device)
        # aspect 1 calls synthesis as before, so a generator without the keyword still renders squares
        img = self.fast.synthesis(ws, noise_mode=noise_mode, **kwargs).float()
        if channels_last:
            img = img.contiguous(memory_format=torch.channels_last)
        h, w = frame_shape(self.size, aspect)
        if img.shape[-2:] != (h, w):
            down = h < img.shape[-2]
            img = F.interpolate(img, size=(h, w), mode="bilinear", align_corners=False, antialias=down)
        return img

    @torch.no_grad()
    def frame(self, ws: torch.Tensor, noise_mode: str = "const") -> np.ndarray:
        """ws ``[num_ws, w_dim]`` -> ``[H, W, 3]`` uint8, C-contiguous (what displays and encoders take)."""
        img = self.images(ws.unsqueeze(0), noise_mode, channels_last=True)[0]
        return to_uint8(img)


def to_uint8_batch(imgs: torch.Tensor) -> list[np.ndarray]:
    """``[N, 3, H, W]`` in [-1, 1] -> N ``[H, W, 3]`` uint8 arrays, each C-contiguous: what
    :func:`to_uint8` gives per image, in a few passes over the whole batch (in place on ``imgs``)."""
    x = torch.nan_to_num_(imgs.float(), nan=-1.0).clamp_(-1.0, 1.0).add_(1.0).mul_(127.5).round_()
    out = torch.empty(imgs.shape[0], imgs.shape[2], imgs.shape[3], imgs.shape[1], dtype=torch.uint8)
    out.copy_(x.permute(0, 2, 3, 1))
    return list(out.numpy())


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """``[3, H, W]`` in [-1, 1] -> ``[H, W, 3]`` uint8 numpy (NaN becomes black, not garbage)."""
    x = torch.nan_to_num(img, nan=-1.0).clamp(-1.0, 1.0).add(1.0).mul(127.5).round()
    return x.to(torch.uint8).permute(1, 2, 0).contiguous().cpu().numpy()
