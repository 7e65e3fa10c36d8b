"""Training speed of each ``vjapp-train`` stage: optimizer steps per second, printed as a table.

    python benchmarks/train.py --stages clip audio generator sound2video --steps 20
    python benchmarks/train.py --device cuda --steps 200 --batch-size 64 --data SYNTHSCAPES_DIR

Each stage runs through the real CLI (``training.cli.main``) into one scratch bundle, in the
order given (the audio stage needs the clip part, sound2video the others), with
``--log-every 1``; its rate is read from the run's ``metrics.jsonl`` between the first and the
last logged step, so start-up (imports, data decoding, model building) is not counted. Without
``--data`` a small synthscapes set is generated first. A stage that is not in this build, or
fails, shows ``n/a`` and why.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_STAGES = ("clip", "audio", "generator", "sound2video")


def rate_from_metrics(run_dir: Path) -> tuple[float, int] | None:
    """(steps per second, steps measured) between the first and last logged training steps."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return None
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r.get("prefix") == "train" and "time" in r]
    if len(rows) < 2:
        return None
    first, last = rows[0], rows[-1]
    span = last["time"] - first["time"]
    steps = last["step"] - first["step"]
    return (steps / span if span > 0 else float("inf")), steps


def run_stage(stage: str, argv: list[str], quiet: bool) -> tuple[int, str]:
    from training.cli import main as train_main

    err = io.StringIO()
    with contextlib.redirect_stderr(err) if quiet else contextlib.nullcontext():
        try:
            rc = train_main([stage, *argv])
        except SystemExit as exc:  # argparse errors
            rc = int(exc.code or 0)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
            return 1, f"{type(exc).__name__}: {exc}"
    lines = [line for line in err.getvalue().splitlines() if line.strip() and "it/s" not in line and "s/it" not in line]
    return rc, (lines[-1] if lines else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--stages", nargs="+", default=list(DEFAULT_STAGES), help="stages to time, in order")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per stage")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default: each stage's own)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    parser.add_argument("--data", type=Path, default=None, help="dataset (default: generate a small synthscapes set)")
    parser.add_argument("--clips", type=int, default=18, help="clips of the generated set")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per generated clip")
    parser.add_argument("--size", type=int, default=64, help="frame size of the generated set")
    parser.add_argument("--extra", action="append", default=[], metavar="STAGE=ARGS",
                        help="extra options for one stage, e.g. 'audio=--channels 16 32 64 128' (repeatable)")
    parser.add_argument("--work-dir", type=Path, default=None, help="keep the scratch bundle here")
    parser.add_argument("--verbose", action="store_true", help="show the stages' logs")
    args = parser.parse_args(argv)

    extra: dict[str, list[str]] = {}
    for item in args.extra:
        stage, _, rest = item.partition("=")
        extra.setdefault(stage, []).extend(shlex.split(rest))

    with tempfile.TemporaryDirectory(prefix="vjapp-bench-train-") as tmp:
        work = args.work_dir or Path(tmp)
        data = args.data
        if data is None:
            from training.data.synthscapes import write_synthscapes

            data = work / "synthscapes"
            if not (data / "manifest.csv").is_file():
                t0 = time.perf_counter()
                write_synthscapes(data, args.clips, args.seconds, args.size, seed=0, progress=False)
                print(f"generated {args.clips} synthscapes clips in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        out = work / "bundle"
        rows = []
        for stage in args.stages:
            run_dir = work / "runs" / stage
            argv_stage = ["--data", str(data), "--out", str(out), "--run-dir", str(run_dir), "--steps", str(args.steps),
                          "--log-every", "1", "--ckpt-every", "0", "--no-tensorboard", "--no-resume",
                          "--device", args.device]
            if args.batch_size:
                argv_stage += ["--batch-size", str(args.batch_size)]
            if args.amp:
                argv_stage.append("--amp")
            argv_stage += extra.get(stage, [])
            t0 = time.perf_counter()
            rc, why = run_stage(stage, argv_stage, quiet=not args.verbose)
            wall = time.perf_counter() - t0
            measured = rate_from_metrics(run_dir) if rc == 0 else None
            config = {}
            if (run_dir / "config.json").is_file():
                config = json.loads((run_dir / "config.json").read_text()).get("args", {})
            batch = config.get("batch_size", args.batch_size or "?")
            if measured is None:
                rows.append((stage, "n/a", "n/a", str(batch), f"{wall:.1f}", why or f"exit {rc}"))
            else:
                ips, steps = measured
                rows.append((stage, f"{ips:.2f}", f"{1000.0 / ips:.1f}" if ips > 0 else "n/a", str(batch), f"{wall:.1f}",
                             f"{steps} steps timed"))

    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else "CPU"
    print(f"vjapp-train stage speed on {device} ({name}), torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), amp={'on' if args.amp else 'off'}")
    header = ("stage", "it/s", "ms/it", "batch", "wall s", "note")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
