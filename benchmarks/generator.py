"""Time StyleGAN2 synthesis per frame (batch 1 by default), the live show's inner loop.

    python benchmarks/generator.py --sizes 128 256 --dtypes fp32 bf16 --iters 30
    python benchmarks/generator.py --checkpoint resources/default/generator --dtypes ref fp32 bf16 --batch 1 4
    python benchmarks/generator.py --sizes 512 --channel-base 16384 --channel-max 512 --dtypes bf16

Prints device/thread info, the machine's measured peak (multiply-accumulates per second of a
1024^3 matmul and of a 64-channel 3x3 convolution, best of the two, per dtype, on the threads in
use) and a table of milliseconds per synthesis call after warm-up (median and 90th percentile),
the multiply-accumulates per frame of the reference (counted with ``torch.utils.flop_counter.FlopCounterMode``),
the arithmetic floor (MACs / peak) and the ratio of the median to that floor. dtype ``ref`` is
the plain fp32 :class:`Generator` (the training path); ``fp32``/``bf16``/``fp16`` are
:func:`prepare_for_inference` copies. Weights are random unless ``--checkpoint`` is given; speed
does not depend on the values. ``--clock cpu`` times with the process's CPU time instead of the
wall clock: on a shared machine with ``--threads 1`` it leaves out the time other processes
took the core.
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
    p.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"],
                   choices=["ref", *DTYPES, *(f"{d}-jit" for d in DTYPES)],
                   help="ref = plain fp32 Generator; others = prepare_for_inference(dtype); -jit: with jit=True")
    p.add_argument("--channel-max", type=int, default=512, help="StyleGAN2 channel_max")
    p.add_argument("--channel-base", type=int, default=16384, help="StyleGAN2 channel_base (NVIDIA config-f: 32768)")
    p.add_argument("--checkpoint", type=Path, default=None, help="native generator to time instead of random weights")
    p.add_argument("--batch", type=int, nargs="+", default=[1], help="frames per synthesis call (one row each)")
    p.add_argument("--iters", type=int, default=20, help="timed calls per row")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per row")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--no-channels-last", action="store_true", help="keep NCHW activations in the fast path")
    p.add_argument("--noise-mode", choices=["const", "random", "none"], default="const")
    p.add_argument("--no-flush-denormal", action="store_true",
                   help="leave torch.set_flush_denormal alone (it is process-wide; on by default here)")
    p.add_argument("--compile", action="store_true", help="torch.compile the synthesis module")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall clock, or this process's CPU time (with --threads 1: immune to other load)")
    p.add_argument("--no-floor", action="store_true", help="skip the peak measurement (floor/ratio columns show '-')")
    args = p.parse_args(argv)
    if args.iters < 1 or args.warmup < 0 or min(args.batch) < 1:
        p.error("--iters and --batch must be >= 1, --warmup >= 0")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA GPU is available")
    return args


def time_calls(fn: Callable[[], object], iters: int, warmup: int, device: torch.device,
               clock: Callable[[], float] = time.perf_counter) -> list[float]:
    """Milliseconds per call, synchronizing the GPU around each one."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(iters):
        t0 = clock()
        fn()
        sync()
        out.append((clock() - t0) * 1000.0)
    return out


def measure_peak(dtype: torch.dtype, device: torch.device, clock: Callable[[], float] = time.perf_counter,
                 iters: int = 10) -> float:
    """Multiply-accumulates per second this machine reaches in ``dtype`` on the current threads:
    the better of a 1024^3 matmul and a 64-channel 3x3 convolution at 64x64 (channels_last)."""
    import torch.nn.functional as F

    a = torch.randn(1024, 1024, device=device).to(dtype)
    b = torch.randn(1024, 1024, device=device).to(dtype)
    x = torch.randn(1, 64, 64, 64, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3, device=device).to(dtype).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        mm = statistics.median(time_calls(lambda: a @ b, iters, 2, device, clock))
        conv = statistics.median(time_calls(lambda: F.conv2d(x, w, padding=1), iters, 2, device, clock))
    return max(1024**3 / mm, 64 * 64 * 9 * 64 * 64 / conv) * 1000.0


def count_macs(module: Callable[..., torch.Tensor], ws: torch.Tensor, noise_mode: str) -> int:
    """Multiply-accumulates of one call (FlopCounterMode's FLOPs / 2: convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(ws, noise_mode=noise_mode)
    return counter.get_total_flops() // 2


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
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"torch {torch.__version__} | {describe_device(device)} | threads {torch.get_num_threads()} | "
          f"flush_denormal {flush} | noise {args.noise_mode} | compile {args.compile} | clock {args.clock}")
    peaks: dict[str, float] = {}
    if not args.no_floor:
        for name in sorted({"fp32" if n == "ref" else n.removesuffix("-jit") for n in args.dtypes}):
            peaks[name] = measure_peak(DTYPES[name.removesuffix("-jit")], device, clock)
        print("peak " + " | ".join(f"{k} {v / 1e9:.0f} GMAC/s" for k, v in peaks.items()))
    sizes = [None] if args.checkpoint is not None else args.sizes
    header = (f"{'size':>5} {'ch_base':>7} {'ch_max':>6} {'dtype':>8} {'batch':>5} {'median ms':>10} {'p90 ms':>8} "
              f"{'fps':>7} {'MMAC/frame':>10} {'floor ms':>8} {'ratio':>6}")
    print(header)
    print("-" * len(header))
    for size in sizes:
        G = build(size or 0, args).to(device).requires_grad_(False)
        for batch in args.batch:
            gen = torch.Generator(device="cpu").manual_seed(1)
            z = torch.randn([batch, G.z_dim], generator=gen).to(device)
            with torch.no_grad():
                ws = G.mapping(z, truncation_psi=0.7)
            macs = count_macs(G.synthesis, ws, args.noise_mode)  # the work a frame needs (the reference's count)
            for name in args.dtypes:
                if name == "ref":
                    module: torch.nn.Module = G.synthesis
                else:
                    module = prepare_for_inference(G, DTYPES[name.removesuffix("-jit")],
                                                   channels_last=not args.no_channels_last, jit=name.endswith("-jit"))
                if args.compile:
                    module = torch.compile(module)

                def call(m: torch.nn.Module = module) -> torch.Tensor:
                    with torch.no_grad():
                        return m(ws, noise_mode=args.noise_mode)

                times = time_calls(call, args.iters, args.warmup, device, clock)
                med = statistics.median(times)
                peak = peaks.get("fp32" if name == "ref" else name.removesuffix("-jit"))
                floor = f"{macs / peak * 1000.0:>8.3g}" if peak else f"{'-':>8}"
                ratio = f"{med / (macs / peak * 1000.0):>6.3g}" if peak else f"{'-':>6}"
                cfg = G.config
                print(f"{cfg.resolution:>5} {cfg.channel_base:>7} {cfg.channel_max:>6} {name:>8} {batch:>5} "
                      f"{med:>10.1f} {percentile(times, 0.9):>8.1f} {1000.0 * batch / med:>7.1f} "
                      f"{macs / batch / 1e6:>10.1f} {floor} {ratio}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
