"""Picture primitives for synthscapes: gradients, periodic noise textures, scrolling, splats.

Frames are float32 RGB in [0, 1] while a scene is composed (``[T, H, W, 3]``) and become uint8 at
the end. Everything is vectorised over frames; particles (sparks, drops, bubbles) are splatted all
at once with ``np.bincount`` rather than drawn one by one, so a scene costs a few dozen array
passes whatever its particle count.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "grid",
    "vertical_gradient",
    "periodic_noise",
    "scroll",
    "splat",
    "blur3",
    "jitter_colour",
    "mix",
    "to_uint8",
]


def grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1): ``y`` [H, 1] and ``x`` [1, W] (broadcastable)."""
    y = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]
    x = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]
    return y, x


def vertical_gradient(top: np.ndarray, bottom: np.ndarray, h: int, w: int, gamma: float = 1.0) -> np.ndarray:
    """[H, W, 3] blend from colour ``top`` (row 0) to ``bottom`` (last row); ``gamma`` bends it."""
    y, _ = grid(h, w)
    t = (y**gamma)[..., None]  # [H, 1, 1]
    img = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    return np.broadcast_to(img, (h, w, 3)).astype(np.float32)


def _periodic_upsample(g: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear, wrap-around upsampling of a [gh, gw] grid to [h, w] (so the result tiles)."""
    gh, gw = g.shape
    ys = np.arange(h, dtype=np.float32) * gh / h
    xs = np.arange(w, dtype=np.float32) * gw / w
    y0 = ys.astype(np.int64)
    x0 = xs.astype(np.int64)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    fy = fy * fy * (3 - 2 * fy)  # smoothstep: no visible grid creases
    fx = fx * fx * (3 - 2 * fx)
    y1 = (y0 + 1) % gh
    x1 = (x0 + 1) % gw
    a = g[y0][:, x0] * (1 - fx) + g[y0][:, x1] * fx
    b = g[y1][:, x0] * (1 - fx) + g[y1][:, x1] * fx
    return (a * (1 - fy) + b * fy).astype(np.float32)


def periodic_noise(
    rng: np.random.Generator, h: int, w: int, cells_y: int, cells_x: int, octaves: int = 3
) -> np.ndarray:
    """Tileable fractal value noise [h, w] in [0, 1]: ``octaves`` layers, each twice as fine and
    half as strong, on a ``cells_y`` x ``cells_x`` base lattice."""
    out = np.zeros((h, w), np.float32)
    total = 0.0
    for o in range(octaves):
        cy, cx = max(1, cells_y << o), max(1, cells_x << o)
        amp = 0.5**o
        out += amp * _periodic_upsample(rng.random((cy, cx), dtype=np.float32), h, w)
        total += amp
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / (hi - lo + 1e-6)


def scroll(tex: np.ndarray, dy: np.ndarray, dx: np.ndarray, h: int, w: int) -> np.ndarray:
    """Sample a tileable texture [th, tw] at offsets (pixels, per frame ``dy``/``dx`` [T]) ->
    [T, h, w], bilinear in both axes so slow motion stays smooth.

    One small gather per frame (rows, then columns) is much cheaper than a [T, h, w] index array.
    """
    th, tw = tex.shape
    dy = np.asarray(dy, np.float64)
    dx = np.asarray(dx, np.float64)
    out = np.empty((dy.shape[0], h, w), np.float32)
    rows = np.arange(h)
    cols = np.arange(w)
    for t in range(dy.shape[0]):
        oy, ox = np.floor(dy[t]), np.floor(dx[t])
        fy, fx = np.float32(dy[t] - oy), np.float32(dx[t] - ox)
        y0 = (rows + int(oy)) % th
        x0 = (cols + int(ox)) % tw
        band = np.take(tex, np.concatenate([y0, (y0 + 1) % th]), axis=0)  # [2h, tw]
        left = np.take(band, x0, axis=1)
        right = np.take(band, (x0 + 1) % tw, axis=1)
        lerp = left + (right - left) * fx  # [2h, w]
        out[t] = lerp[:h] + (lerp[h:] - lerp[:h]) * fy
    return out


def splat(
    frames: int, h: int, w: int, t: np.ndarray, y: np.ndarray, x: np.ndarray, weight: np.ndarray | float = 1.0
) -> np.ndarray:
    """Bilinear splat of points (frame ``t`` int, row ``y`` and column ``x`` in pixels, float) into
    [T, H, W] float32; points outside the picture are dropped."""
    t = np.asarray(t, np.int64).ravel()
    y = np.asarray(y, np.float32).ravel() - 0.5
    x = np.asarray(x, np.float32).ravel() - 0.5
    wt = np.broadcast_to(np.asarray(weight, np.float32), t.shape).ravel()
    y0 = np.floor(y)
    x0 = np.floor(x)
    fy = y - y0
    fx = x - x0
    y0 = y0.astype(np.int64)
    x0 = x0.astype(np.int64)
    out = np.zeros(frames * h * w, np.float64)
    for oy, ox, ww in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy = y0 + oy
        xx = x0 + ox
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w) & (t >= 0) & (t < frames)
        idx = (t[ok] * h + yy[ok]) * w + xx[ok]
        out += np.bincount(idx, weights=(wt * ww)[ok], minlength=out.shape[0])
    return out.reshape(frames, h, w).astype(np.float32)


def blur3(a: np.ndarray) -> np.ndarray:
    """3x3 box-ish blur (1-2-1 separable) over the last two axes, edges clamped."""
    p = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(1, 1), (1, 1)], mode="edge")
    v = 0.25 * p[..., :-2, :] + 0.5 * p[..., 1:-1, :] + 0.25 * p[..., 2:, :]
    return 0.25 * v[..., :, :-2] + 0.5 * v[..., :, 1:-1] + 0.25 * v[..., :, 2:]


def jitter_colour(rng: np.random.Generator, rgb: tuple[float, float, float], amount: float = 0.08) -> np.ndarray:
    """``rgb`` (0..1) with each channel scaled by 1 +- ``amount`` (per-clip palette variation)."""
    c = np.asarray(rgb, np.float32) * (1 + rng.uniform(-amount, amount, 3)).astype(np.float32)
    return np.clip(c, 0.0, 1.0)


def mix(base: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Alpha-blend ``colour`` ([3] or [..., 3]) over ``base`` [..., 3] with ``alpha`` [...] in [0, 1]."""
    a = np.clip(np.asarray(alpha, np.float32), 0.0, 1.0)[..., None]
    colour = np.asarray(colour, np.float32)
    return base + (colour - base) * a


def to_uint8(frames: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] float in [0, 1] -> uint8."""
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
