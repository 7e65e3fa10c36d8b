"""``vjapp gui`` (also plain ``vjapp``): the control window and the output window, live.

This module is imported whenever the ``vjapp`` parser is built, so it imports neither Qt nor
torch at module level; :func:`run` imports :mod:`vjapp.app`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

PROG = "vjapp gui"


def _nonneg_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds >= 0, got {text!r}")
    return value


def _fps(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected frames per second, got {text!r}") from None
    if not 1 <= value <= 240:
        raise argparse.ArgumentTypeError(f"--fps must be 1..240, got {text}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", default=None, metavar="DIR",
                   help="bundle directory; without it, the embedded default (else a random bundle)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--audio", default=None, metavar="FILE", help="play this audio file; without --audio or --input, the demo audio plays")
    src.add_argument("--input", default=None, metavar="DEVICE",
                     help="listen to this input device (index or part of its name; see `vjapp devices`)")
    p.add_argument("--mute", action="store_true", help="do not play a file to the speakers (it still drives the show)")
    p.add_argument("--screen", type=int, default=None, metavar="N",
                   help="fullscreen output on screen N (0 = first); without it, fullscreen on the second screen "
                        "when there is one, else a window (F toggles fullscreen)")
    p.add_argument("--windowed", action="store_true", help="keep the output in a normal window (testing)")
    p.add_argument("--osc-host", default="127.0.0.1", help="interface the OSC server listens on (0.0.0.0: the network)")
    p.add_argument("--osc-port", type=int, default=9000, help="OSC UDP port (0: any free port)")
    p.add_argument("--osc-feedback", default=None, metavar="HOST:PORT",
                   help="send control changes made in the GUI to this OSC address")
    p.add_argument("--no-osc", action="store_true", help="do not start the OSC server")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="synthesis precision (auto: bf16 on CPU, fp16 on CUDA)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads of the engine (0: all cores but one)")
    p.add_argument("--record-dir", default=None, metavar="DIR",
                   help="where recordings go; without it, <your Videos folder>/vjapp")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder for user presets, converted generators and built bundles; without it, the "
                        "platform's app data folder (presets in ~/.config/vjapp/presets)")
    p.add_argument("--settings", default=None, metavar="FILE",
                   help="keep the window state in this INI file; without it, the platform's per-user settings")
    p.add_argument("--fps", type=_fps, default=30.0, help="output frames per second")
    p.add_argument("--size", default="native", help="output size in pixels (power of two, 64..1024) or 'native'")
    p.add_argument("--quit-after", type=_nonneg_float, default=None, metavar="SECONDS",
                   help="quit after this many seconds (smoke tests)")
    p.add_argument("--screenshot", default=None, metavar="PNG", help="write a PNG of the output window when quitting")


def default_args(**overrides: object) -> argparse.Namespace:
    """The ``vjapp gui`` defaults as a namespace (for tests and for ``vjapp`` with no command)."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([])
    for key, value in overrides.items():
        if not hasattr(args, key):
            raise AttributeError(f"vjapp gui has no option {key!r}")
        setattr(args, key, value)
    return args


def has_display() -> bool:
    """Whether Qt can open windows here: an X or Wayland display, or a platform chosen explicitly."""
    if os.environ.get("QT_QPA_PLATFORM"):
        return True
    if sys.platform != "linux":
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


HEADLESS_OUTPUT = Path("out") / "vjapp-demo.mp4"


def run_headless(args: argparse.Namespace) -> int:
    """No display: render the chosen (or demo) audio with the chosen bundle to an MP4 instead."""
    from vjapp.app import demo_audio_path
    from vjapp.engine.controls import Controls, size_from_text
    from vjapp.render import render_file

    audio = args.audio or str(demo_audio_path())
    print(f"{PROG}: no display here (no DISPLAY or WAYLAND_DISPLAY); rendering {audio} to {HEADLESS_OUTPUT} "
          "instead", file=sys.stderr)
    try:
        controls = Controls().replace(fps=args.fps, size=size_from_text(args.size))
        report = render_file(audio, HEADLESS_OUTPUT, controls, args.bundle,
                             args.device, args.dtype)
    except Exception as exc:  # noqa: BLE001 - one clear line for the user
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {report.path.resolve()}: {report.frames} frames, {report.seconds:.1f} s of audio, "
          f"{report.speed:.2f}x real time, with {report.bundle}")
    return 0


def run(args: argparse.Namespace) -> int:
    from vjapp.app import parse_host_port, parse_size

    if not has_display() and args.input is None:
        return run_headless(args)

    try:
        parse_size(args.size)
        if args.osc_feedback:
            parse_host_port(args.osc_feedback)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from vjapp.app import run as run_app

    return run_app(args)
