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
import logging
import platform
import resource
import sys
import time
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

STAGES = ("mel", "encoder", "recurrent", "scene", "model_step", "rhythm", "interpolate", "synthesis", "to_uint8")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default=None,
                   help="bundle directory, a StyleGAN2 .pkl/.pt to import, or random:RES[:CHANNEL_BASE] (a "
                        "random-weight StyleGAN2 of RES px, w 512, config-f widths (channel_base 32768) unless "
                        "given, as an imported generator; for timing) (default: the embedded default)")
    p.add_argument("--sizes", type=int, nargs="+", default=None, metavar="PX",
                   help="time each of these output sizes in turn (e.g. 256 512 1024); overrides --size")
    p.add_argument("--atlas-samples", type=int, default=4096, metavar="N",
                   help="pictures in an imported generator's latent atlas (built once, cached)")
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
          threads: int = 0, aspect: str = "1:1", atlas_samples: int = 4096) -> dict[str, Any]:
    """Run the benchmark and return its figures: the sound step (with the atlas scene where the
    bundle has one), the rhythm layer (onsets -> pulse offsets) and synthesis, per frame."""
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
    from model.atlas import AtlasSettings
    from vjapp.engine.offline import RhythmFollower

    bundle_path = prepare_bundle(bundle_path, atlas_samples)
    bundle, where = open_bundle(bundle_path, dev, lazy_clip=True)  # no text prompt: CLIP only if a cache is missing
    rate = float(model_rate or bundle.info.model_rate)
    show = Show(bundle, dev, dt, ShowConfig(pipeline=PipelineConfig(window_seconds=bundle.info.segment_seconds),
                                            atlas=AtlasSettings(samples=atlas_samples)))
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
    mono = np.clip(signal, -1, 1).astype(np.float32)
    audio = torch.from_numpy(mono).to(dev)
    rhythm = RhythmFollower(show, sr)

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
        with show.stats.stage("rhythm"):
            rhythm.hear(mono[rhythm.position:int(tf * sr)])
            pulse = rhythm.pulse()
        show.frame_at(tf, pulse)
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
        "num_ws": int(bundle.info.num_ws),
        "w_dim": int(bundle.info.w_dim),
        "atlas": len(show.atlas) if show.atlas is not None else 0,
        "scene_on": show.sound.scene_layer is not None,
        "fps": achieved,
        "render_speed_x_realtime_at_fps": achieved / fps,
        "stages_ms": {k: {"p50": v["p50"], "p90": v["p90"]} for k, v in stages.items()},
        "synthesis_ms_per_frame": synthesis,
        "peak_rss_mb": peak_rss_mb,
        "peak_cuda_mb": torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None,
    }


def prepare_bundle(spec: str | None, atlas_samples: int) -> str | None:
    """A bundle directory for ``spec``: itself, or (a .pkl/.pt, or ``random:RES``) an imported
    generator's bundle with CLIP/F_a of the default and its latent atlas built and cached."""

    from model.atlas import AtlasSettings
    from model.bundle import load_bundle
    from vjapp.bundles import open_bundle
    from vjapp.engine.show import scene_atlas
    from vjapp.imported import bundle_for_generator, import_generator, imported_dir, is_generator_file

    if spec is None or not (spec.startswith("random:") or is_generator_file(spec)):
        return spec
    base, base_name = open_bundle(None, "cpu")
    if spec.startswith("random:"):
        from model.stylegan2 import Generator, StyleGAN2Config

        try:
            res, *rest = (int(v) for v in spec.split(":")[1:])
            base_ch = rest[0] if rest else StyleGAN2Config.channel_base
            if len(rest) > 1:
                raise ValueError
            config = StyleGAN2Config(resolution=res, channel_base=base_ch)  # widths capped at 512, w 512
        except ValueError:
            raise ValueError(f"--bundle {spec}: expected random:RES or random:RES:CHANNEL_BASE with RES a "
                             "power of two (e.g. random:1024, random:512:16384)") from None
        name = f"random-{res}" if not rest else f"random-{res}-{base_ch}"
        target = imported_dir() / "bundles" / name
        if not (target / "bundle.json").is_file():
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                G = Generator(config).eval()
            bundle_for_generator(G, base, target, spec, base_name=base_name)
    else:
        target = import_generator(spec, base, imported_dir(), base_name=base_name)
    bundle = load_bundle(target, parts=("generator", "clip"))
    log.info("latent atlas of %s: %d pictures (built once, then cached)", target, atlas_samples)
    scene_atlas(bundle, build=True, settings=AtlasSettings(samples=atlas_samples))
    return str(target)


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
        f"generator {r['resolution']} px, W+ {r['num_ws']}x{r['w_dim']} -> output "
        f"{r['output_shape'][1]}x{r['output_shape'][0]} px, model rate {r['model_rate']:g} Hz",
        f"latent atlas {r['atlas']} pictures, sound scene {'on' if r['scene_on'] else 'off'}, rhythm layer on",
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
    if args.sizes:
        try:
            bundle = prepare_bundle(args.bundle, args.atlas_samples)
            rows = [bench(bundle, args.device, args.dtype, args.frames, args.warmup, args.fps, args.model_rate,
                          size_from_text(str(px)), args.threads, args.aspect, args.atlas_samples)
                    for px in args.sizes]
        except (CheckpointError, ValueError, RuntimeError) as exc:
            print(f"vjapp bench: error: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(rows, indent=2) if args.json else format_sizes(rows))
        return 0
    try:
        r = bench(args.bundle, args.device, args.dtype, args.frames, args.warmup, args.fps, args.model_rate, size,
                  args.threads, args.aspect, args.atlas_samples)
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


def format_sizes(rows: list[dict[str, Any]]) -> str:
    """One line per output size: fps and per-stage p50 ms (a README table)."""
    r0 = rows[0]
    stages = [k for k in STAGES if any(k in r["stages_ms"] for r in rows)]
    head = (f"vjapp bench — {r0['bundle']}\ndevice {r0['device']}  cpu {r0['cpu']}  threads {r0['torch_threads']}  "
            f"dtype {r0['dtype']}\ngenerator {r0['resolution']} px, W+ {r0['num_ws']}x{r0['w_dim']}, latent atlas "
            f"{r0['atlas']} pictures, sound scene {'on' if r0['scene_on'] else 'off'}, rhythm layer on\n"
            "(per-stage figures: p50 ms)\n")
    lines = ["| output px | fps | " + " | ".join(stages) + " |", "|---" * (len(stages) + 2) + "|"]
    for r in rows:
        cells = [f"{(r['stages_ms'][k]['p50'] or 0):.1f}" if k in r["stages_ms"] else "-" for k in stages]
        lines.append(f"| {r['output_size']} | {r['fps']:.2f} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines)
