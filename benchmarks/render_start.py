"""How soon ``vjapp render`` starts and what it costs: ``python benchmarks/render_start.py IN -o OUT [render options]``.

Runs ``vjapp render`` in this process with the given arguments and prints, as JSON, the wall time
from this script's start to the first encoded frame and to the end, the process's CPU time (user
+ sys, the encoder thread included), and whether OpenCLIP and torchvision were imported (a render
without a text prompt builds no CLIP). Compare branches alternately: the figures follow the
machine's load.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from typing import Any

STARTED = time.perf_counter()


def main(argv: list[str] | None = None) -> int:
    import vjapp.render as render
    from vjapp.cli import main as vjapp_main

    first: list[float] = []
    put = render._EncoderThread.put

    def timed_put(self: Any, frame: Any, pcm: Any) -> None:
        if not first:
            first.append(time.perf_counter() - STARTED)
        put(self, frame, pcm)

    render._EncoderThread.put = timed_put  # type: ignore[method-assign]
    try:
        rc = vjapp_main(["render", *(sys.argv[1:] if argv is None else argv)])
    finally:
        render._EncoderThread.put = put  # type: ignore[method-assign]
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "rc": rc,
        "first_frame_s": round(first[0], 2) if first else None,
        "wall_s": round(time.perf_counter() - STARTED, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "imported": sorted(m for m in ("open_clip", "torchvision") if m in sys.modules),
    }))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
