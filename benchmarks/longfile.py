"""Peak RSS and time to first frame on a long audio file, for the file player and for ``vjapp render``.

    python benchmarks/longfile.py                       # generates /tmp/vjapp-2h.flac (2 h, 48 kHz stereo)
    python benchmarks/longfile.py --audio set.flac --bundle BUNDLE
    python benchmarks/longfile.py --pythonpath OTHER_CHECKOUT   # the same figures for other code

Each measurement runs in a fresh child process: the player's peak RSS (VmHWM) and time from
``FilePlayer(path)`` to the first audio in the ring; render's peak RSS (ru_maxrss of the child)
and time from launch to the first encoded frames on disk, after which it is stopped with SIGINT.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

PLAYER = r"""
import json, sys, time
from vjapp.audio import FilePlayer
def hwm():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
t0 = time.perf_counter()
p = FilePlayer(sys.argv[1], play_audio=False)
p.start()
while p.ring.write_index == 0:
    time.sleep(0.0005)
first = time.perf_counter() - t0
time.sleep(1.0)
t1 = time.perf_counter(); p.seek(p.duration * 0.8); w = p.ring.write_index
while not p.ring.read_since(w).data.any():
    time.sleep(0.0005)
seek = time.perf_counter() - t1
p.stop()
print(json.dumps({"peak_rss_mb": hwm(), "first_audio_s": first, "seek_s": seek, "duration_s": p.duration}))
"""


def generate(path: Path, hours: float, sr: int = 48000) -> None:
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", sr, 2, format="FLAC", subtype="PCM_16") as f:
        for m in range(int(hours * 60)):
            t = np.arange(60 * sr) / sr
            x = 0.3 * np.sin(2 * np.pi * (110 + m) * t) + 0.05 * rng.standard_normal(t.size)
            f.write(np.stack([x, -x], axis=1).astype(np.float32))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--audio", default="/tmp/vjapp-2h.flac", help="long file (generated if missing)")
    ap.add_argument("--hours", type=float, default=2.0, help="length of a generated file")
    ap.add_argument("--bundle", default=None, help="bundle for the render (default: the embedded default)")
    ap.add_argument("--pythonpath", default=str(ROOT), help="checkout whose vjapp is measured")
    ap.add_argument("--skip-render", action="store_true")
    args = ap.parse_args(argv)
    audio = Path(args.audio)
    if not audio.exists():
        t = time.perf_counter()
        generate(audio, args.hours)
        print(f"generated {audio} ({audio.stat().st_size / 2**20:.0f} MB) in {time.perf_counter() - t:.0f} s")
    env = dict(os.environ, PYTHONPATH=args.pythonpath)
    res = subprocess.run([sys.executable, "-c", PLAYER, str(audio)], env=env, cwd=args.pythonpath,
                         capture_output=True, text=True)
    if res.returncode:
        print(res.stderr[-2000:], file=sys.stderr)
        return 1
    r = json.loads(res.stdout.strip().splitlines()[-1])
    print(f"file player: {r['duration_s'] / 3600:.2f} h file, peak RSS {r['peak_rss_mb']:.0f} MB, "
          f"first audio after {r['first_audio_s'] * 1000:.0f} ms, seek to 80% heard after {r['seek_s'] * 1000:.0f} ms")
    if args.skip_render:
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.mp4"
        cmd = [sys.executable, "-m", "vjapp", "render", str(audio), "-o", str(out), "--quiet", "--size", "64"]
        if args.bundle:
            cmd += ["--bundle", args.bundle]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=args.pythonpath, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        first = None
        while proc.poll() is None:
            if any(p.exists() and p.stat().st_size > 4096 for p in (out, out.with_name(out.name + ".partial"))):
                first = time.perf_counter() - t0
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate()
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    first_text = f"{first:.1f} s" if first is not None else "never"
    print(f"render: peak RSS {peak:.0f} MB, first frames on disk after {first_text}; "
          f"stopped with SIGINT: {err.decode().strip().splitlines()[-1] if err.strip() else '(nothing said)'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
