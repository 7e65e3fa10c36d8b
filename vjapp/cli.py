"""The ``vjapp`` command: ``vjapp [gui] | render | bench | devices | convert``.

With no command, ``vjapp`` is ``vjapp gui``: the live app.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> int``; it is imported only when chosen, so ``vjapp convert`` never loads Qt
and ``vjapp`` never loads training code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from typing import Sequence

from vjapp import __version__

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "gui": ("vjapp.gui", "the live app: control window + output window (the default command)"),
    "render": ("vjapp.render", "render an audio file to an MP4 (headless, as fast as it can)"),
    "bench": ("vjapp.bench", "measure frames per second, per-stage times and latency here"),
    "devices": ("vjapp.devices", "list audio input (and output) devices"),
    "convert": ("vjapp.convert", "import an NVIDIA .pkl or rosinality .pt generator into the native format"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vjapp",
        description="Real-time, audio-reactive StyleGAN visuals.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"vjapp {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        importlib.import_module(module_name).add_arguments(p)
        p.set_defaults(_module=module_name)
    return parser


def _default_to_gui(argv: list[str]) -> list[str]:
    """``vjapp [-v] [gui options]`` means ``vjapp [-v] gui [gui options]``."""
    if any(a in SUBCOMMANDS for a in argv) or {"-h", "--help", "--version"} & set(argv):
        return argv
    top = [a for a in argv if a in ("-v", "-vv", "--verbose")]
    return top + ["gui"] + [a for a in argv if a not in top]


EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as shells report a command ended by Ctrl+C


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``vjapp`` command; returns its exit code.

    Ctrl+C while a command loads or works (a render, a conversion) ends it with one line and
    exit code 130, not a traceback; the live app handles SIGINT and SIGTERM itself (see
    :func:`vjapp.app.run`).
    """
    if sys.platform == "darwin":  # before torch loads: ops Metal lacks run on the CPU instead of failing
        os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")
    try:
        parser = build_parser()
        args = parser.parse_args(_default_to_gui(list(sys.argv[1:] if argv is None else argv)))
        level = logging.WARNING - 10 * min(args.verbose, 2)
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:
        print("vjapp: interrupted", file=sys.stderr)
        if argv is None:  # run as a program: end here, with the code we say
            # A Ctrl+C that landed in code a C extension runs through PyRun_* (pybind11 during torch's
            # import) marks the interpreter "ended by an unhandled KeyboardInterrupt" even though it
            # was handled here, and Python would then kill itself with SIGINT at exit (code -2).
            # Nothing is open yet (the app and render handle signals themselves once they run).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(EXIT_INTERRUPTED)
        return EXIT_INTERRUPTED
