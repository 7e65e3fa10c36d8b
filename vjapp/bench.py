"""``vjapp bench``: how fast the show runs here, stage by stage.

Drives the same :class:`Show` as the live engine and ``vjapp render`` with a synthetic,
loud-and-changing signal, as fast as it can (no pacing), and prints: frames per second,
milliseconds per stage (mel, encoder, recurrent step, synthesis, conversion to uint8), render
speed relative to real time and peak memory. Then it measures the latency of the live engine,
sound in -> frame out: the real :class:`~vjapp.engine.engine.Engine` thread fed by real-time
256-sample blocks with loud bursts at known instants (see :mod:`vjapp.bench_rhythm`).
``--beat`` instead renders 120 BPM loops and prints how much the picture moves on the beat.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from typing import Any

import numpy as np
import torch

STAGES = ("mel", "encoder", "recurrent", "model_step", "interpolate", "synthesis", "to_uint8")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default=None, help="bundle directory (default: the embedded default)")
    p.add_argument("--device", default="auto", help="auto (CUDA, else Apple-silicon MPS, else CPU), cpu, mps or cuda[:N]")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"], help="synthesis precision")
    p.add_argument("--frames", type=int, default=150, help="frames to time (after warm-up)")
    p.add_argument("--warmup", type=int, default=15, help="untimed frames first")
    p.add_argument("--fps", type=float, default=30.0, help="display rate the model rate is paced against")
    p.add_argument("--model-rate", type=float, default=None, help="model steps per second (default: the bundle's)")
    p.add_argument("--size", default="native", help="output size (power of two) or 'native'")
    p.add_argument("--aspect", type=_aspect, default="1:1",
                   help="frame shape (width:height): 1:1, 16:9, 4:3 or 9:16; --size is the short side")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--latency-bursts", type=int, default=12,
                   help="bursts for the live latency measurement (0: skip it)")
    p.add_argument("--latency-fps", type=float, nargs="+", default=[30.0], metavar="FPS",
                   help="display rates to measure the live latency at")
    p.add_argument("--beat", action="store_true",
                   help="the beat benchmark instead: frame change on the beat vs between (120 BPM loops)")


def _aspect(text: str) -> str:
    from vjapp.engine.controls import aspect_arg

    return aspect_arg(text)


def bench(bundle_path: str | None = None, device: str = "auto", dtype: str = "auto", frames: int = 150,
          warmup: int = 15, fps: float = 30.0, model_rate: float | None = None, size: int | str = "native",
          threads: int = 0, aspect: str = "1:1") -> dict[str, Any]:
    """Run the benchmark and return its figures."""
    from vjapp.bundles import open_bundle
    from vjapp.engine.controls import Controls
    from vjapp.engine.frames import resolve_device, resolve_dtype, synchronize
    from vjapp.engine.pipeline import PipelineConfig
    from vjapp.engine.show import Show, ShowConfig

    if threads > 0:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    bundle, where = open_bundle(bundle_path, dev)
    rate = float(model_rate or bundle.info.model_rate)
    show = Show(bundle, dev, dt, ShowConfig(pipeline=PipelineConfig(window_seconds=bundle.info.segment_seconds)))
    controls = Controls().replace(model_rate=rate, fps=fps, size=size, aspect=aspect)
    show.apply(controls, 0.0, immediate=True)

    sr = show.sound.sample_rate
    total = warmup + frames
    seconds = total / fps + 1.0
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(0)
    # a tone sweep under noise bursts whose loudness changes every half second
    env = np.repeat(rng.uniform(0.05, 0.8, size=int(seconds * 2) + 1), sr // 2)[: t.size]
    signal = (0.3 * np.sin(2 * np.pi * (110 + 50 * t) * t) + env * rng.standard_normal(t.size) * 0.5)
    audio = torch.from_numpy(np.clip(signal, -1, 1).astype(np.float32)).to(dev)

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    next_step = 0
    step_dt = 1.0 / rate
    started = None
    for i in range(total):
        if i == warmup:
            synchronize(dev)
            show.stats.reset()
            started = time.perf_counter()
        tf = i / fps
        while next_step * step_dt <= tf + step_dt:
            tk = next_step * step_dt
            end = int(tk * sr)
            show.model_step(tk, [audio[max(0, end - show.sound.window_samples):end]])
            next_step += 1
        show.frame_at(tf)
    synchronize(dev)
    assert started is not None
    wall = time.perf_counter() - started
    snap = show.stats.snapshot()
    synthesis = compare_synthesis(show, iters=max(3, frames // 10))
    stages = {k: snap["stages"][k] for k in STAGES if k in snap["stages"]}
    achieved = frames / wall
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "bundle": where,
        "device": str(dev) if dev.type != "cuda" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        "cpu": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "dtype": str(dt).replace("torch.", ""),
        "resolution": int(bundle.info.resolution),
        "output_size": int(show.renderer.size),
        "output_shape": list(show.renderer.shape),  # [height, width]
        "model_rate": rate,
        "fps": achieved,
        "render_speed_x_realtime_at_fps": achieved / fps,
        "stages_ms": {k: {"p50": v["p50"], "p90": v["p90"]} for k, v in stages.items()},
        "synthesis_ms_per_frame": synthesis,
        "peak_rss_mb": peak_rss_mb,
        "peak_cuda_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
    }


def compare_synthesis(show: Any, batches: tuple[int, ...] = (1, 4), iters: int = 10) -> dict[str, Any]:
    """Milliseconds per frame (median) of the plain fp32 generator (the reference, the path before
    the fast one) and of the show's fast synthesis, at each batch size, timed interleaved in this
    run so that both see the same machine load."""
    from vjapp.engine.frames import synchronize

    dev = show.device
    reference = show.G.synthesis
    fast = show.renderer.fast.synthesis
    out: dict[str, Any] = {"reference": {}, "fast": {}}
    gen = torch.Generator(device="cpu").manual_seed(0)
    for batch in batches:
        z = torch.randn([batch, show.G.z_dim], generator=gen).to(dev)
        with torch.no_grad():
            ws = show.G.mapping(z, truncation_psi=0.7)
            times: dict[str, list[float]] = {"reference": [], "fast": []}
            for i in range(iters + 1):  # the first round warms up
                for name, fn in (("reference", reference), ("fast", fast)):
                    synchronize(dev)
                    t0 = time.perf_counter()
                    fn(ws)
                    synchronize(dev)
                    if i > 0:
                        times[name].append((time.perf_counter() - t0) * 1000.0 / batch)
        for name in times:
            out[name][str(batch)] = float(np.median(times[name]))
    return out


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"vjapp bench — {r['bundle']}",
        f"device {r['device']}  cpu {r['cpu']}  threads {r['torch_threads']}  dtype {r['dtype']}",
        f"generator {r['resolution']} px -> output {r['output_shape'][1]}x{r['output_shape'][0]} px, "
        f"model rate {r['model_rate']:g} Hz",
        "",
        f"{'stage':<14}{'p50 ms':>10}{'p90 ms':>10}",
    ]
    for name, v in r["stages_ms"].items():
        lines.append(f"{name:<14}{(v['p50'] or 0):>10.2f}{(v['p90'] or 0):>10.2f}")
    syn = r.get("synthesis_ms_per_frame")
    if syn:
        batches = list(syn["fast"])
        lines += ["", "synthesis ms per frame, same run " + "".join(f"{'batch ' + b:>10}" for b in batches)]
        for name, label in (("reference", "reference (plain fp32)"), ("fast", f"fast ({r['dtype']})")):
            lines.append(f"{label:<32}" + "".join(f"{syn[name][b]:>10.2f}" for b in batches))
    lines += [
        "",
        f"frames per second          {r['fps']:.1f}",
        f"render speed at that fps   {r['render_speed_x_realtime_at_fps']:.2f}x real time",
        f"peak memory                {r['peak_rss_mb']:.0f} MB RSS"
        + (f", {r['peak_cuda_mb']:.0f} MB CUDA" if r["peak_cuda_mb"] is not None else ""),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from model.formats import CheckpointError

    from vjapp.engine.controls import size_from_text

    size = size_from_text(args.size)
    if args.beat:
        from vjapp.bench_rhythm import beat_bench, format_beat

        try:
            b = beat_bench(args.bundle, args.device, args.dtype, fps=args.fps)
        except (CheckpointError, ValueError, RuntimeError) as exc:
            print(f"vjapp bench: error: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(b, indent=2) if args.json else format_beat(b))
        return 0
    try:
        r = bench(args.bundle, args.device, args.dtype, args.frames, args.warmup, args.fps, args.model_rate, size,
                  args.threads, args.aspect)
    except (CheckpointError, ValueError, RuntimeError) as exc:
        print(f"vjapp bench: error: {exc}", file=sys.stderr)
        return 1
    if args.latency_bursts > 0:
        from vjapp.bench_rhythm import format_latency, latency_bench

        r["latency"] = []
        for fps in args.latency_fps:
            lat = latency_bench(args.bundle, args.device, args.dtype, fps=fps, bursts=args.latency_bursts,
                                threads=args.threads or 1)
            r["latency"].append(lat)
    print(json.dumps(r, indent=2) if args.json else format_report(r))
    if not args.json:
        for lat in r.get("latency", []):
            print(format_latency(lat))
    return 0
