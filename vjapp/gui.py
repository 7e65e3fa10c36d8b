"""``vjapp gui`` (also plain ``vjapp``): the control window and the output window, live.

This module is imported whenever the ``vjapp`` parser is built, so it imports neither Qt nor
torch at module level; :func:`run` imports :mod:`vjapp.app`.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

PROG = "vjapp gui"
BUNDLE_FILE = "bundle.json"  # model.bundle.BUNDLE_FILE (not imported here: model.bundle loads torch)


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


def _nonneg_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a UDP port 0..65535, got {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"a UDP port is 0..65535 (0: any free port), got {text}")
    return value


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def _host(text: str) -> str:
    """An IPv4/IPv6 address or a host name (syntax only: nothing is looked up here)."""
    try:
        ipaddress.ip_address(text.strip("[]"))
        return text
    except ValueError:
        pass
    if len(text) <= 253 and _HOSTNAME.fullmatch(text):
        return text
    raise argparse.ArgumentTypeError(f"expected an IP address or a host name, got {text!r}")


def parse_host_port(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6addr]:PORT`` for IPv6) -> (host, port); ValueError naming the problem."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT (e.g. 127.0.0.1:9001), got {value!r}")
    return host.strip("[]"), int(port)


def _host_port(text: str) -> str:
    try:
        host, _ = parse_host_port(text)
        _host(host)
    except (ValueError, argparse.ArgumentTypeError):
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (e.g. 127.0.0.1:9001), got {text!r}") from None
    return text


def parse_size(value: str | int) -> int | str:
    """``native`` or a power of two (64..1024); raises ValueError with the reason otherwise."""
    if isinstance(value, int) or str(value).strip().isdigit():
        n = int(value)
        if n < 64 or n > 1024 or n & (n - 1):
            raise ValueError(f"--size must be 'native' or a power of two from 64 to 1024, got {value}")
        return n
    if str(value).strip().lower() == "native":
        return "native"
    raise ValueError(f"--size must be 'native' or a power of two from 64 to 1024, got {value!r}")


def _aspect(text: str) -> str:
    from vjapp.engine.controls import aspect_arg

    return aspect_arg(text)


def _size(text: str) -> str:
    try:
        parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _device(text: str) -> str:
    if not _DEVICE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"expected auto, cpu, mps, cuda or cuda:N, got {text!r}")
    return text


# The path checks return the path with ``~`` expanded, as the app and the render then use it.
def _nearest_existing(path: Path) -> Path:
    """``path`` itself, or its closest ancestor that exists (what a mkdir -p would start from)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _can_write_in(folder: Path, wanted: Path) -> None:
    """``folder`` is a writable folder, or can be made one (its nearest existing ancestor is);
    the error names ``wanted``, the path the user gave."""
    base = _nearest_existing(folder)
    if not base.is_dir():
        raise argparse.ArgumentTypeError(f"cannot write {wanted}: {base} is not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"cannot write {wanted}: {base} is not writable")


def _folder_to_write(text: str) -> str:
    path = Path(text).expanduser()
    _can_write_in(path, path)
    return str(path)


def _file_to_write(text: str) -> str:
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder, expected a file")
    if path.exists() and not os.access(path, os.W_OK):
        raise argparse.ArgumentTypeError(f"{path} is not writable")
    _can_write_in(path.parent, path)
    return str(path)


def _output(text: str) -> str:
    """``-o``: a file to write, or an existing folder to write into."""
    path = Path(text).expanduser()
    if path.is_dir():
        _can_write_in(path, path)
        return str(path)
    return _file_to_write(text)


def _audio_file(text: str) -> str:
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such audio file: {path}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{path} is not a file")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{path} is not readable")
    if path.stat().st_size == 0:
        raise argparse.ArgumentTypeError(f"{path} is empty (0 bytes)")
    return str(path)


def _bundle_dir(text: str) -> str:
    path = Path(text).expanduser()
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such bundle folder: {path}")
    if not (path / BUNDLE_FILE).is_file():
        raise argparse.ArgumentTypeError(f"{path} is not a bundle folder (it has no {BUNDLE_FILE})")
    return str(path)


def _midi_port(text: str) -> str:
    """``--midi``: a MIDI input's index or (a part of) its name; whether it exists is checked when
    the show starts (:func:`check_midi`), since ports come and go."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a MIDI input's index or name (see `vjapp devices --midi`)")
    return text.strip()


MIDI_APIS = ("auto", "alsa", "jack", "coremidi", "winmm")  # vjapp.control.midi.MIDI_APIS (not imported: mido)


def _ndi_name(text: str) -> str:
    """An NDI source name: 1..63 printable characters, no parentheses (NDI shows "HOST (NAME)")."""
    name = text.strip()
    if not 1 <= len(name) <= 63 or not name.isprintable() or any(c in name for c in "()\\"):
        raise argparse.ArgumentTypeError(
            f"an NDI source name is 1..63 printable characters without ( ) or \\, got {text!r}")
    return name


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=_bundle_dir, default=None, metavar="DIR",
                   help="bundle directory; without it, the embedded default (else a random bundle)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--audio", type=_audio_file, default=None, metavar="FILE",
                     help="play this audio file; without --audio or --input, the demo audio plays")
    src.add_argument("--input", default=None, metavar="DEVICE",
                     help="listen to this input device (index or part of its name; see `vjapp devices`)")
    p.add_argument("--mute", action="store_true", help="do not play a file to the speakers (it still drives the show)")
    p.add_argument("--screen", type=_nonneg_int, default=None, metavar="N",
                   help="fullscreen output on screen N (0 = first); without it, fullscreen on the second screen "
                        "when there is one, else a window beside the control window (F toggles fullscreen)")
    p.add_argument("--windowed", action="store_true", help="keep the output in a normal window (testing)")
    p.add_argument("--osc-host", type=_host, default="127.0.0.1",
                   help="interface the OSC server listens on (0.0.0.0: the network)")
    p.add_argument("--osc-port", type=_port, default=9000, help="OSC UDP port (0: any free port)")
    p.add_argument("--osc-feedback", type=_host_port, default=None, metavar="HOST:PORT",
                   help="send control changes made in the GUI to this OSC address")
    p.add_argument("--no-osc", action="store_true", help="do not start the OSC server")
    p.add_argument("--midi", type=_midi_port, default=None, metavar="PORT",
                   help="MIDI input (index or part of its name; see `vjapp devices --midi`): CC and notes "
                        "drive controls and actions (MIDI learn), MIDI clock drives the tempo; needs the midi extra")
    p.add_argument("--midi-api", default="auto", choices=MIDI_APIS,
                   help="MIDI system (auto: ALSA on Linux, JACK where there is no ALSA sequencer, CoreMIDI on "
                        "macOS, WinMM on Windows)")
    p.add_argument("--device", type=_device, default="auto",
                   help="auto (CUDA, else Apple-silicon MPS, else CPU), cpu, mps or cuda[:N]")
    p.add_argument("--link", action="store_true",
                   help='join the local Ableton Link session as the external tempo source (needs `pip install '
                        '"vjapp[link]"`, GPL)')
    p.add_argument("--ndi", type=_ndi_name, default=None, metavar="NAME",
                   help='send the output over NDI as source NAME (needs `pip install "vjapp[ndi]"`)')
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="synthesis precision (auto: bf16 on CPU, fp16 on CUDA)")
    p.add_argument("--threads", type=_nonneg_int, default=0,
                   help="torch CPU threads of the engine (0: all cores but one)")
    p.add_argument("--record", action="store_true", help="start recording the output as soon as the show starts")
    p.add_argument("--record-dir", type=_folder_to_write, default=None, metavar="DIR",
                   help="where recordings go; without it, <your Videos folder>/vjapp")
    p.add_argument("--data-dir", type=_folder_to_write, default=None, metavar="DIR",
                   help="folder for user presets, converted generators and built bundles; without it, the "
                        "platform's app data folder (presets in ~/.config/vjapp/presets)")
    p.add_argument("--settings", type=_file_to_write, default=None, metavar="FILE",
                   help="keep the window state in this INI file; without it, the platform's per-user settings")
    p.add_argument("--fps", type=_fps, default=30.0, help="output frames per second")
    p.add_argument("--size", type=_size, default="native",
                   help="output size in pixels (power of two, 64..1024) or 'native'")
    p.add_argument("--aspect", type=_aspect, default="1:1",
                   help="frame shape (width:height): 1:1, 16:9, 4:3 or 9:16, synthesized natively; "
                        "--size is the short side")
    p.add_argument("-o", "--output", type=_output, default=None, metavar="MP4",
                   help="with no display only: the MP4 to render to (a folder: <audio name>.mp4 in it); without "
                        "it, out/<audio name>.mp4. An existing file is never overwritten: -1, -2... is added")
    p.add_argument("--quit-after", type=_nonneg_float, default=None, metavar="SECONDS",
                   help="quit after this many seconds (smoke tests)")
    p.add_argument("--screenshot", type=_file_to_write, default=None, metavar="PNG",
                   help="write a PNG of the output window when quitting")


def _option_checks(parser: argparse.ArgumentParser) -> list[tuple[str, str, Callable[[str], Any]]]:
    """``(dest, flag, check)`` for every option whose ``type=`` checks its value."""
    return [(a.dest, "/".join(a.option_strings), a.type) for a in parser._actions
            if a.option_strings and callable(a.type)]


def validate(args: argparse.Namespace) -> None:
    """Check every option of ``args`` as the parser does (for namespaces built in code, such as
    :func:`default_args` ones); raises ValueError with argparse's one-line wording."""
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    for dest, flag, check in _option_checks(parser):
        value = getattr(args, dest, None)
        if value is None or isinstance(value, bool):
            continue
        try:
            setattr(args, dest, check(str(value)))
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"argument {flag}: {exc}") from None


def check_midi(args: argparse.Namespace) -> str | None:
    """With ``--midi``: None if mido is there and the port exists now, else the one-line reason."""
    if not getattr(args, "midi", None):
        return None
    from vjapp.control.midi import MidiError, list_midi_inputs, resolve_port

    try:
        resolve_port(args.midi, list_midi_inputs(args.midi_api))
    except MidiError as exc:
        return f"argument --midi: {exc}"
    return None


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


HEADLESS_DIR = Path("out")
DEMO_STEM = "vjapp-demo"


def headless_target(audio: Path, output: str | None, demo: bool = False) -> Path:
    """Where the headless render of ``audio`` goes: ``-o`` as given (a folder: ``<stem>.mp4`` in it),
    else ``out/<audio stem>.mp4`` (``out/vjapp-demo.mp4`` for the demo audio)."""
    name = f"{DEMO_STEM if demo else audio.stem}.mp4"
    if output is None:
        return HEADLESS_DIR / name
    path = Path(output).expanduser()
    return path / name if path.is_dir() else path


def unused_path(path: Path) -> Path:
    """``path`` if nothing is there, else the first free ``<stem>-1<suffix>``, ``<stem>-2<suffix>``..."""
    candidate, n = path, 0
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


def run_headless(args: argparse.Namespace) -> int:
    """No display: render the chosen (or demo) audio with the chosen bundle to an MP4 instead.

    The MP4 is named after the audio (or ``-o``); an existing file is never overwritten.
    """
    from vjapp.app import demo_audio_path
    from vjapp.engine.controls import Controls, size_from_text
    from vjapp.render import render_file

    demo = demo_audio_path()
    if args.audio is None and demo is None:
        print(f"{PROG}: error: no display here and no demo audio to render; give --audio FILE", file=sys.stderr)
        return 2
    audio = Path(args.audio) if args.audio else demo
    wanted = headless_target(audio, args.output, demo=args.audio is None)
    target = unused_path(wanted)
    kept = f" ({wanted} exists and is kept)" if target != wanted else ""
    print(f"{PROG}: no display here (no DISPLAY or WAYLAND_DISPLAY); rendering {audio} to {target}{kept} "
          "instead", file=sys.stderr)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        controls = Controls().replace(fps=args.fps, size=size_from_text(args.size), aspect=args.aspect)
        report = render_file(audio, target, controls, args.bundle, args.device, args.dtype)
    except Exception as exc:  # noqa: BLE001 - one clear line for the user
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {report.path.resolve()}: {report.frames} frames, {report.seconds:.1f} s of audio, "
          f"{report.speed:.2f}x real time, with {report.bundle}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Check every option, then the live app (or, with no display, a render of the audio to an MP4).

    Exit codes: 0 after a quit from the window, ``--quit-after`` or OSC; 2 for a bad option;
    130 after Ctrl+C (SIGINT) and 143 after SIGTERM, each a clean stop (see :func:`vjapp.app.run`).
    """
    try:
        validate(args)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    midi_problem = check_midi(args)
    if midi_problem is not None:
        print(f"{PROG}: error: {midi_problem}", file=sys.stderr)
        return 2
    if not has_display():
        if args.midi is not None:
            print(f"{PROG}: error: argument --midi: no display here (no DISPLAY or WAYLAND_DISPLAY), so no live "
                  "show to control; `vjapp render FILE -o OUT.mp4` renders a file", file=sys.stderr)
            return 2
        if args.input is not None:
            print(f"{PROG}: error: argument --input: no display here (no DISPLAY or WAYLAND_DISPLAY), so no live "
                  "show to listen for; `vjapp render FILE -o OUT.mp4` renders a file", file=sys.stderr)
            return 2
        return run_headless(args)
    from vjapp.app import run as run_app

    return run_app(args)
