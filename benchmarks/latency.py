"""Sound in -> frame out on the live engine: ``python benchmarks/latency.py [--fps 30 60] [--bursts 20]``.

Drives the real :class:`vjapp.engine.engine.Engine` (its thread, pacer and wall clock) with a
source writing real-time 256-sample blocks into the ring from its own thread; after steady quiet
sound it injects loud bursts at known instants and prints, from each burst's first sample entering
the ring, (a) the first published frame that changed beyond the pre-burst frame-to-frame noise and
(b) the frame that reaches half of the eventual change: median and p95 over the bursts.
"""

from __future__ import annotations

import argparse
import json

from vjapp.bench_rhythm import format_latency, latency_bench


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bundle", default=None)
    p.add_argument("--fps", type=float, nargs="+", default=[30.0, 60.0])
    p.add_argument("--bursts", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    for fps in args.fps:
        r = latency_bench(args.bundle, fps=fps, bursts=args.bursts, threads=args.threads)
        print(json.dumps(r) if args.json else format_latency(r), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
