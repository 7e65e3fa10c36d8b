"""Time StyleGAN3 synthesis per frame (batch 1), configs t and r, square and widescreen.

    python benchmarks/stylegan3.py --sizes 256 --configs t r --aspects 1 1.7778 --iters 5
    python benchmarks/stylegan3.py --device cuda --sizes 256 512 1024 --iters 20

Weights are random (speed does not depend on them); channel counts are NVIDIA's (``--channel-base``
32768 / ``--channel-max`` 512 for t, twice that for r, as its train.py does). Prints milliseconds
per ``synthesis(ws, aspect=...)`` call after warm-up (median and 90th percentile), float32.
Variants are timed round-robin in one process, so a busy machine slows them alike.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.stylegan3 import Generator, StyleGAN3Config  # noqa: E402


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[256], help="output resolutions")
    p.add_argument("--configs", nargs="+", default=["t", "r"], choices=["t", "r"], help="NVIDIA configs")
    p.add_argument("--aspects", type=float, nargs="+", default=[1.0, 16 / 9], help="width / height")
    p.add_argument("--channel-base", type=int, default=32768, help="config t's channel_base (r doubles it)")
    p.add_argument("--channel-max", type=int, default=512, help="config t's channel_max (r doubles it)")
    p.add_argument("--iters", type=int, default=5, help="timed calls per variant")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls per variant first")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p.parse_args(argv)


def build(config: str, size: int, base: int, cmax: int, device: torch.device) -> Generator:
    extra = dict(conv_kernel=1, use_radial_filters=True, channel_base=2 * base, channel_max=2 * cmax) \
        if config == "r" else dict(channel_base=base, channel_max=cmax)
    return Generator(StyleGAN3Config(resolution=size, **extra)).eval().requires_grad_(False).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, device {device} ({name}), {torch.get_num_threads()} CPU threads")
    variants = []
    for size in args.sizes:
        for config in args.configs:
            G = build(config, size, args.channel_base, args.channel_max, device)
            ws = G.mapping(torch.randn(1, G.z_dim, device=device), truncation_psi=0.7)
            for aspect in args.aspects:
                variants.append((f"{config} {size} aspect {aspect:.3f}", G, ws, aspect))
    times: dict[str, list[float]] = {label: [] for label, *_ in variants}
    shapes: dict[str, tuple[int, ...]] = {}
    with torch.no_grad():
        for i in range(args.warmup + args.iters):
            for label, G, ws, aspect in variants:
                sync(device)
                t = time.perf_counter()
                img = G.synthesis(ws, aspect=aspect)
                sync(device)
                if i >= args.warmup:
                    times[label].append((time.perf_counter() - t) * 1000)
                shapes[label] = tuple(img.shape[2:])
    print(f"{'variant':<26} {'H x W':>11} {'median ms':>10} {'p90 ms':>8}")
    for label, values in times.items():
        values = sorted(values)
        p90 = values[min(len(values) - 1, int(0.9 * len(values)))]
        h, w = shapes[label]
        print(f"{label:<26} {f'{h} x {w}':>11} {statistics.median(values):>10.1f} {p90:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
