"""Does the picture hit the beat? ``python benchmarks/beat.py`` (same as ``vjapp bench --beat``).

Renders kick-only, hat-only and kick + hat + bass loops at 120 BPM through the show on the sample
clock and prints the mean frame change in the 100 ms after each kick against the mean elsewhere,
the fine- vs coarse-layer motion, and the motion at 0.1 of the amplitude against full scale.
"""

from __future__ import annotations

import argparse
import json

from vjapp.bench_rhythm import beat_bench, format_beat


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=None)
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--bpm", type=float, default=120.0)
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    r = beat_bench(args.bundle, fps=args.fps, bpm=args.bpm, seconds=args.seconds)
    print(json.dumps(r, indent=2) if args.json else format_beat(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
