"""Time StyleGAN2 synthesis per frame (batch 1 by default), the live show's inner loop.

    python benchmarks/generator.py --sizes 128 256 --dtypes fp32 bf16 --iters 30
    python benchmarks/generator.py --checkpoint resources/bundle/generator --dtypes ref bf16

Prints device/thread info and a table of milliseconds per synthesis call after warm-up
(median and 90th percentile). dtype ``ref`` is the plain fp32 :class:`Generator` (the training
path); ``fp32``/``bf16``/``fp16`` are :func:`prepare_for_inference` copies. Weights are random
unless ``--checkpoint`` is given; speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.stylegan2 import Generator, StyleGAN2Config, load_generator, prepare_for_inference  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="output resolutions")
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["ref", *DTYPES],
                   help="ref = plain fp32 Generator; others = prepare_for_inference(dtype)")
    p.add_argument("--channel-max", type=int, default=512, help="StyleGAN2 channel_max")
    p.add_argument("--channel-base", type=int, default=16384, help="StyleGAN2 channel_base (NVIDIA config-f: 32768)")
    p.add_argument("--checkpoint", type=Path, default=None, help="native generator to time instead of random weights")
    p.add_argument("--batch", type=int, default=1, help="frames per synthesis call")
    p.add_argument("--iters", type=int, default=20, help="timed calls per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per row")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--no-channels-last", action="store_true", help="keep NCHW activations in the fast path")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--no-flush-denormal", action="store_true",
                   help="leave torch.set_flush_denormal alone (it is process-wide; on by default here)")
    p.add_argument("--compile", action="store_true", help="torch.compile the synthesis module")
    args = p.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or args.batch < 1:
        p.error("--iters and --batch must be >= 1, --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is available")
    return args


def time_calls(fn: Callable[[], torch.Tensor], iters: int, warmup: int, device: torch.device) -> list[float]:
    """Milliseconds per call, synchronizing the GPU around each one."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


def build(size: int, args: argparse.Namespace) -> Generator:
    if args.checkpoint is not None:
        return load_generator(args.checkpoint)
    cfg = StyleGAN2Config(resolution=size, channel_base=args.channel_base, channel_max=args.channel_max)
    torch.manual_seed(0)
    return Generator(cfg).eval()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    flush = False if args.no_flush_denormal else torch.set_flush_denormal(True)
    print(f"torch {torch.__version__} | {describe_device(device)} | threads {torch.get_num_threads()} | "
          f"flush_denormal {flush} | batch {args.batch} | noise {args.noise_mode} | compile {args.compile}")
    sizes = [None] if args.checkpoint is not None else args.sizes
    header = f"{'size':>5} {'ch_base':>7} {'ch_max':>6} {'dtype':>5} {'median ms':>10} {'p90 ms':>8} {'fps':>7}"
    print(header)
    print("-" * len(header))
    for size in sizes:
        G = build(size or 0, args).to(device)
        gen = torch.Generator(device="cpu").manual_seed(1)
        z = torch.randn([args.batch, G.z_dim], generator=gen).to(device)
        with torch.no_grad():
            ws = G.mapping(z, truncation_psi=0.7)
        for name in args.dtypes:
            if name == "ref":
                module: torch.nn.Module = G.synthesis
            else:
                module = prepare_for_inference(G, DTYPES[name], channels_last=not args.no_channels_last)
            if args.compile:
                module = torch.compile(module)

            def call(m: torch.nn.Module = module) -> torch.Tensor:
                with torch.no_grad():
                    return m(ws, noise_mode=args.noise_mode)

            times = time_calls(call, args.iters, args.warmup, device)
            med = statistics.median(times)
            cfg = G.config
            print(f"{cfg.resolution:>5} {cfg.channel_base:>7} {cfg.channel_max:>6} {name:>5} {med:>10.1f} "
                  f"{percentile(times, 0.9):>8.1f} {1000.0 * args.batch / med:>7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
