"""OSC control from DAWs and controllers: one address table, a hardened UDP server, feedback.

Address table
    Built once from :data:`~vjapp.engine.controls.CONTROL_SPECS`: every control path becomes
    ``/vjapp/<path with / for .>`` (``mix.coarse.strength`` -> ``/vjapp/mix/coarse/strength``,
    ``source_weights.0`` -> ``/vjapp/source_weights/0``), plus the action addresses in
    :data:`ACTIONS` (presets, recording, source transport, seed reroll). :data:`ADDRESS_TABLE`
    lists them; :func:`address_table_markdown` renders it (``python -m vjapp.osc --markdown``).

Server (:class:`OscServer`)
    Its own thread runs a ``recvfrom`` loop on one UDP socket (bound to 127.0.0.1 unless told
    otherwise), with a short timeout so :meth:`OscServer.stop` returns quickly. Each datagram is
    handled completely before the next:

    * **Framing is checked strictly first** (:func:`split_packet`): bundles are split here, with
      element sizes that must be positive, multiples of 4 and inside the datagram, and a nesting
      limit; each message's address, type tags and arguments must exactly fill it, with zero
      padding and known type tags. Only then is the message decoded by python-osc's
      :class:`~pythonosc.osc_message.OscMessage`. We do not hand datagrams straight to python-osc
      because (1.10.2) ``OscBundle`` loops forever on a negative element size (a one-packet
      denial of service), ``get_float`` zero-pads a truncated float into a value, and unknown type
      tags log one root-logger warning per character.
    * A datagram that fails anywhere is **dropped whole** (a bundle is all or nothing) and counted:
      ``dropped_non_utf8`` when an address, type tag or string argument is not UTF-8, ``malformed``
      otherwise.
    * **Bundles are applied at once**: the time tag is ignored, nothing ever sleeps or is queued.
    * **Lookup is an exact dict lookup** on the address string. Patterns such as ``/vjapp/*`` are
      not expanded (no regular expression is ever built from network input); they are simply
      unknown addresses, counted. python-osc's ``Dispatcher`` is not used.
    * **Values**: numeric controls take int or float arguments (``i h f d``); bool controls take
      ``T``/``F`` or a number (nonzero = on); string controls take a string; choice controls take
      the choice name or a number (index into the choices, rounded and clamped); ``size`` takes a
      number or ``"native"``; ``/vjapp/source_weights`` takes two numbers. The value then goes
      through :func:`~vjapp.engine.controls.set_path` inside
      :meth:`Mailbox.update <vjapp.engine.mailbox.Mailbox.update>`, so it is clamped and
      type-checked by the one validation the whole app shares. NaN/Inf are rejected
      (``non_finite``); wrong argument counts or types are rejected (``bad_args``); a rejected
      message changes nothing.
    * **Actions** are called on the server thread with one argument (see :data:`ACTIONS`); the
      app's callbacks must be quick and thread-safe (e.g. post to the GUI thread, put into a
      mailbox). Trigger actions fire on a message with no argument or a nonzero/true argument and
      ignore a zero/false one (``ignored``), so a button that sends 1 on press and 0 on release
      fires once. ``seed/reroll`` has a built-in handler (a random seed) unless one is given.
    * **Nothing escapes the thread**: every exception is caught, counted and logged (rate-limited).

Feedback
    With ``feedback=(host, port)``, :meth:`OscServer.notify_ui_change` sends ``/vjapp/<path> value``
    there for changes made in the UI, so motorized faders / TouchOSC follow the GUI. A value that
    arrived over OSC is not sent back: the server remembers what it applied per path and drops a
    notification that repeats it (floats within 1/1000 of the control's range).

Counters (:meth:`OscServer.stats`) add up::

    received == packets + malformed + dropped_non_utf8
    messages == applied + actions + ignored + unknown_address + bad_args + non_finite
                + no_handler + action_errors + errors
"""

from __future__ import annotations

import argparse
import logging
import math
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.parsing import osc_types

from vjapp.engine.controls import (
    CONTROL_SPECS,
    MAX_SEED,
    BoolSpec,
    ChoiceSpec,
    ControlError,
    Controls,
    FloatSpec,
    IntSpec,
    SizeSpec,
    Spec,
    StrSpec,
    VectorSpec,
    get_path,
    set_path,
)
from vjapp.engine.mailbox import Mailbox
from vjapp.messages import quote, shorten

__all__ = [
    "PREFIX",
    "ACTIONS",
    "OscAddress",
    "ADDRESS_TABLE",
    "ADDRESSES",
    "OscError",
    "OscServer",
    "address_for_path",
    "address_table_markdown",
    "split_packet",
    "MalformedPacket",
    "main",
]

log = logging.getLogger(__name__)

PREFIX = "/vjapp"
DEFAULT_PORT = 9000
MAX_DATAGRAM = 65536  # largest UDP payload
MAX_BUNDLE_DEPTH = 8  # nested bundles beyond this are malformed (no unbounded recursion)
_POLL_S = 0.05  # recv timeout: how quickly stop() is noticed

# --------------------------------------------------------------------------------------------
# Address table
# --------------------------------------------------------------------------------------------

#: Action name -> (argument kind, argument description, what it does). The action name is the
#: address after ``/vjapp/`` and the key of the ``actions`` mapping given to :class:`OscServer`.
#: Kinds: ``preset`` calls ``fn(name: str | index: int)``; ``switch`` calls ``fn(on: bool)``;
#: ``trigger`` calls ``fn(None)``.
ACTIONS: Mapping[str, tuple[str, str, str]] = {
    "preset": ("preset", "string name or int index", "load a preset (shipped or user)"),
    "preset/next": ("trigger", "none, or nonzero", "load the next preset (wraps around)"),
    "preset/prev": ("trigger", "none, or nonzero", "load the previous preset (wraps around)"),
    "record": ("switch", "1/0, T/F (nonzero = on)", "start / stop recording to MP4"),
    "source/play": ("trigger", "none, or nonzero", "play the file source"),
    "source/pause": ("trigger", "none, or nonzero", "pause the file source"),
    "source/toggle": ("trigger", "none, or nonzero", "toggle play / pause of the file source"),
    "seed/reroll": ("trigger", "none, or nonzero", "jump to a random seed"),
    "ndi": ("switch", "1/0, T/F (nonzero = on)", "start / stop the NDI output (named by --ndi, else vjapp)"),
    "tempo/tap": ("trigger", "none, or nonzero", "tap the beat (tap tempo; set rhythm/tempo_source to tap to follow it)"),
}


@dataclass(frozen=True)
class OscAddress:
    """One row of the address table.

    ``path`` is the control path (dotted) for a control address, None for an action; ``action``
    is the action name for an action address, None for a control.
    """

    address: str
    kind: str
    range: str
    description: str
    path: str | None = None
    action: str | None = None
    spec: Spec | None = None


def address_for_path(path: str) -> str:
    """The OSC address of a dotted control path: ``"mix.fine.seed"`` -> ``/vjapp/mix/fine/seed``."""
    return f"{PREFIX}/{path.replace('.', '/')}"


def _num(x: float) -> str:
    return f"{x:g}"


def _describe_spec(spec: Spec) -> tuple[str, str]:
    """(kind, range) strings of a control spec, for the table."""
    if isinstance(spec, FloatSpec):
        return "float", f"{_num(spec.lo)} .. {_num(spec.hi)}"
    if isinstance(spec, IntSpec):
        return "int", f"{spec.lo} .. {spec.hi}"
    if isinstance(spec, BoolSpec):
        return "bool", "T/F or number (nonzero = on)"
    if isinstance(spec, StrSpec):
        return "string", f"up to {spec.max_len} characters"
    if isinstance(spec, ChoiceSpec):
        return "choice", " \\| ".join(spec.choices) + " (or index)"
    if isinstance(spec, SizeSpec):
        return "size", f"power of two {spec.lo} .. {spec.hi}, or \"native\""
    if isinstance(spec, VectorSpec):
        each = f"{_num(spec.lo)} .. {_num(spec.hi)}"
        return f"float x{spec.length}", f"{spec.length} numbers, each {each}"
    raise TypeError(f"no OSC mapping for spec {spec!r}")  # a new spec type needs a row here


def _build_table() -> tuple[OscAddress, ...]:
    rows = []
    for path, spec in CONTROL_SPECS.items():
        kind, rng = _describe_spec(spec)
        doc = spec.doc
        parent, _, last = path.rpartition(".")
        if last.isdigit() and isinstance(CONTROL_SPECS.get(parent), VectorSpec):
            doc = f"{doc}: element {last} only"
        rows.append(OscAddress(address_for_path(path), kind, rng, doc, path=path, spec=spec))
    for name, (kind, rng, doc) in ACTIONS.items():
        rows.append(OscAddress(f"{PREFIX}/{name}", f"action: {kind}", rng, doc, action=name))
    addresses = [r.address for r in rows]
    assert len(set(addresses)) == len(addresses), "duplicate OSC address"
    return tuple(rows)


ADDRESS_TABLE: tuple[OscAddress, ...] = _build_table()
"""Every OSC address the server understands: controls (in CONTROL_SPECS order), then actions."""

ADDRESSES: Mapping[str, OscAddress] = {row.address: row for row in ADDRESS_TABLE}
"""Exact address string -> its row: the server's only routing structure."""


def address_table_markdown() -> str:
    """The address table as a Markdown table (for the README)."""
    lines = [
        "| Address | Type | Range / arguments | Description |",
        "|---|---|---|---|",
    ]
    for row in ADDRESS_TABLE:
        lines.append(f"| `{row.address}` | {row.kind} | {row.range} | {row.description} |")
    lines += [
        "",
        "Numbers may be sent as int or float; out-of-range values are clamped, NaN/Inf are "
        "rejected. Addresses are matched exactly (no wildcards). Bundles are applied on arrival, "
        "whatever their time tag. Trigger actions ignore an argument of 0 (button release).",
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Strict framing
# --------------------------------------------------------------------------------------------


class MalformedPacket(ValueError):
    """A datagram that is not well-formed OSC (the message says where)."""


class _NonUtf8(MalformedPacket):
    """An address, type tag string or string argument that is not valid UTF-8."""


_BUNDLE_PREFIX = b"#bundle\x00"
_FIXED_SIZE = {"i": 4, "f": 4, "r": 4, "m": 4, "h": 8, "d": 8, "t": 8}
_NO_DATA = frozenset("TFN[]")


def _string_end(dgram: bytes, index: int, what: str) -> int:
    """End index of the OSC string at ``index``; checks terminator, zero padding and UTF-8."""
    nul = dgram.find(b"\x00", index)
    if nul < 0:
        raise MalformedPacket(f"{what} has no terminating NUL")
    end = nul + 1 + (-(nul + 1 - index) % 4)
    if end > len(dgram):
        raise MalformedPacket(f"{what} is truncated (padding missing)")
    if dgram[nul:end].count(0) != end - nul:
        raise MalformedPacket(f"{what} has non-zero padding")
    try:
        dgram[index:nul].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _NonUtf8(f"{what} is not UTF-8: {exc}") from None
    return end


def _check_message(dgram: bytes) -> None:
    """Raise MalformedPacket unless ``dgram`` is one exactly-framed OSC message."""
    if len(dgram) % 4:
        raise MalformedPacket(f"message length {len(dgram)} is not a multiple of 4")
    index = _string_end(dgram, 0, "address")
    if index == len(dgram):
        return  # no type tag string: a message without arguments
    tags_start = index
    index = _string_end(dgram, index, "type tag string")
    tags = dgram[tags_start:index].rstrip(b"\x00").decode("utf-8")
    if not tags.startswith(","):
        raise MalformedPacket("type tag string does not start with ','")
    depth = 0
    for tag in tags[1:]:
        if tag in _FIXED_SIZE:
            index += _FIXED_SIZE[tag]
        elif tag == "s":
            if index >= len(dgram):
                raise MalformedPacket("string argument missing")
            index = _string_end(dgram, index, "string argument")
        elif tag == "b":
            if index + 4 > len(dgram):
                raise MalformedPacket("blob size missing")
            size = int.from_bytes(dgram[index : index + 4], "big", signed=True)
            if size < 0 or index + 4 + size > len(dgram):
                raise MalformedPacket(f"blob size {size} does not fit the datagram")
            index += 4 + size + (-size % 4)
        elif tag in _NO_DATA:
            depth += {"[": 1, "]": -1}.get(tag, 0)
            if depth < 0:
                raise MalformedPacket("unbalanced ']' in type tags")
        else:
            raise MalformedPacket(f"unsupported type tag {tag!r}")
        if index > len(dgram):
            raise MalformedPacket(f"argument {tag!r} runs past the end of the datagram")
    if depth:
        raise MalformedPacket("unbalanced '[' in type tags")
    if index != len(dgram):
        raise MalformedPacket(f"{len(dgram) - index} stray bytes after the last argument")


def split_packet(dgram: bytes, depth: int = 0) -> list[bytes]:
    """The message datagrams of an OSC packet (a message, or a bundle flattened in order).

    Framing is checked strictly; raises :class:`MalformedPacket`. Bundle time tags are skipped:
    the app applies everything on arrival.
    """
    if dgram.startswith(_BUNDLE_PREFIX):
        if depth >= MAX_BUNDLE_DEPTH:
            raise MalformedPacket(f"bundles nested deeper than {MAX_BUNDLE_DEPTH}")
        if len(dgram) < 16:
            raise MalformedPacket("bundle too short for its time tag")
        out: list[bytes] = []
        index = 16  # '#bundle\0' + 8-byte time tag (ignored on purpose)
        while index < len(dgram):
            try:
                size, index = osc_types.get_int(dgram, index)
            except osc_types.ParseError:
                raise MalformedPacket("bundle element size truncated") from None
            if size <= 0 or size % 4 or size > len(dgram) - index:
                raise MalformedPacket(f"bundle element size {size} is invalid here")
            out.extend(split_packet(dgram[index : index + size], depth + 1))
            index += size
        return out
    if dgram.startswith(b"/"):
        _check_message(dgram)
        return [dgram]
    raise MalformedPacket("neither an OSC message ('/') nor a bundle ('#bundle')")


# --------------------------------------------------------------------------------------------
# Argument conversion
# --------------------------------------------------------------------------------------------


class _BadArgs(ValueError):
    pass


class _NonFinite(ValueError):
    pass


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _one(params: Sequence[Any], what: str) -> Any:
    if len(params) != 1:
        raise _BadArgs(f"expected 1 argument ({what}), got {len(params)}")
    return params[0]


def _number(x: Any, what: str) -> float | int:
    if not _is_number(x):
        raise _BadArgs(f"expected a number ({what}), got {type(x).__name__}")
    if isinstance(x, float) and not math.isfinite(x):
        raise _NonFinite(f"non-finite value {x!r}")
    return x


def _truthy(x: Any, what: str) -> bool:
    if isinstance(x, bool):
        return x
    return _number(x, what) != 0


def _control_value(spec: Spec, params: Sequence[Any]) -> Any:
    """The Python value to hand to set_path for a control, from the OSC arguments."""
    if isinstance(spec, VectorSpec):
        if len(params) != spec.length:
            raise _BadArgs(f"expected {spec.length} numbers, got {len(params)} arguments")
        return tuple(_number(p, "vector element") for p in params)
    x = _one(params, spec.kind)
    if isinstance(spec, BoolSpec):
        return _truthy(x, "bool")
    if isinstance(spec, (FloatSpec, IntSpec)):
        return _number(x, spec.kind)
    if isinstance(spec, SizeSpec):
        return x if isinstance(x, str) else _number(x, "size")
    if isinstance(spec, ChoiceSpec):
        if isinstance(x, str):
            return x
        i = round(_number(x, "choice index"))
        return spec.choices[min(max(i, 0), len(spec.choices) - 1)]
    if isinstance(spec, StrSpec):
        if not isinstance(x, str):
            raise _BadArgs(f"expected a string, got {type(x).__name__}")
        return x
    raise _BadArgs(f"unsupported control spec {type(spec).__name__}")


# --------------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------------


class OscError(RuntimeError):
    """The OSC server cannot start (port busy, bad host) or was misused."""


_LOG_ARG_CHARS = 200  # the most of one argument of an OSC log line


class _RateLimitedLog:
    """At most one log record per key every ``interval`` seconds, saying how many were skipped."""

    def __init__(self, logger: logging.Logger, interval: float = 5.0) -> None:
        self._log = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def __call__(self, level: int, key: str, msg: str, *args: Any, exc_info: bool = False) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) < self._interval:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        skipped = self._skipped.pop(key, 0)
        self._last[key] = now
        suffix = f" ({skipped} similar suppressed)" if skipped else ""
        # arguments often quote what came in (an address, an error naming a value): cut them
        short = tuple(shorten(str(a), _LOG_ARG_CHARS) if isinstance(a, (str, BaseException)) else a for a in args)
        self._log.log(level, msg + suffix, *short, exc_info=exc_info)


_COUNTERS = (
    "received", "packets", "malformed", "dropped_non_utf8",
    "messages", "applied", "actions", "ignored", "unknown_address", "bad_args", "non_finite",
    "no_handler", "action_errors", "errors", "callback_errors",
    "feedback_sent", "feedback_suppressed", "feedback_errors",
)  # fmt: skip


class OscServer:
    """OSC server writing :class:`Controls` into a mailbox and calling app actions.

    Args:
        controls: the controls mailbox (shared with the GUI, presets and the engine).
        actions: action name (a key of :data:`ACTIONS`, e.g. ``"record"``) -> callback taking one
            argument (see :data:`ACTIONS`). Called **on the server thread**: it must be quick and
            thread-safe. Actions without a callback are counted as ``no_handler``, except
            ``seed/reroll`` which then sets a random seed itself.
        host: interface to bind; ``127.0.0.1`` (default) accepts only this machine, ``0.0.0.0``
            the network.
        port: UDP port; 0 picks a free one (read :attr:`port` after :meth:`start`).
        feedback: ``(host, port)`` to send UI changes to (see :meth:`notify_ui_change`), or None.
        on_change: ``fn(path, value)`` called on the server thread after an OSC message changed a
            control (value as stored, i.e. clamped), e.g. to move a GUI slider; also after a
            built-in seed reroll (``"seed"``). Must be quick and thread-safe.
    """

    def __init__(
        self,
        controls: Mailbox[Controls],
        actions: Mapping[str, Callable[[Any], None]] | None = None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        feedback: tuple[str, int] | None = None,
        on_change: Callable[[str, Any], None] | None = None,
    ) -> None:
        actions = dict(actions or {})
        unknown = sorted(set(actions) - set(ACTIONS))
        if unknown:
            raise OscError(f"unknown OSC action(s) {unknown}; known: {sorted(ACTIONS)}")
        if not 0 <= int(port) <= 65535:
            raise OscError(f"OSC port must be 0..65535, got {port}")
        self._controls = controls
        self._actions = actions
        self._host = host
        self._requested_port = int(port)
        self._feedback = feedback
        self._on_change = on_change
        self._sock: socket.socket | None = None
        self._feedback_addr: tuple[Any, ...] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # counters, _from_osc
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._from_osc: dict[str, Any] = {}  # path -> last value applied from OSC (no echo)
        self._rng = random.Random()
        self._rlog = _RateLimitedLog(log)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (after :meth:`start`; the requested one before)."""
        if self._sock is not None:
            return int(self._sock.getsockname()[1])
        return self._requested_port

    @property
    def host(self) -> str:
        """The interface the server binds (as given)."""
        return self._host

    @property
    def address(self) -> tuple[str, int] | None:
        """The bound ``(ip, port)`` while started, else None."""
        if self._sock is None:
            return None
        ip, port = self._sock.getsockname()[:2]
        return str(ip), int(port)

    @property
    def running(self) -> bool:
        """True while the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        """Bind the socket and start the server thread. Raises :class:`OscError` if it cannot."""
        if self.running:
            raise OscError("OSC server already running")
        try:
            infos = socket.getaddrinfo(self._host, self._requested_port, type=socket.SOCK_DGRAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise OscError(f"cannot resolve OSC host {self._host!r}: {exc}") from None
        family, _, _, _, sockaddr = infos[0]
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            sock.close()
            busy = exc.errno in (98, 48, 10048)  # EADDRINUSE on Linux, macOS, Windows
            raise OscError(
                f"cannot listen for OSC on {self._host}:{self._requested_port}: "
                f"{exc.strerror or exc}"
                + (" (another program or vjapp uses this port; pick another)" if busy else "")
            ) from None
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)  # absorb bursts
        except OSError:
            pass
        sock.settimeout(_POLL_S)
        if self._feedback is not None:
            fb_host, fb_port = self._feedback
            try:
                fb = socket.getaddrinfo(
                    fb_host, int(fb_port), family=family, type=socket.SOCK_DGRAM
                )
            except (socket.gaierror, UnicodeError, ValueError, OverflowError) as exc:
                sock.close()
                raise OscError(
                    f"cannot resolve OSC feedback target {self._feedback!r}: {exc}"
                ) from None
            self._feedback_addr = fb[0][4]
        self._sock = sock
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vjapp-osc", daemon=True)
        self._thread.start()
        log.info("OSC listening on %s:%d", self._host, self.port)

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the thread and close the socket (returns within about 50 ms)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("OSC server thread did not stop within %.1f s", timeout)
        self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> "OscServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, int]:
        """A consistent snapshot of the counters (see the module docstring for how they add up)."""
        with self._lock:
            return dict(self._counts)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    # -- receive loop ------------------------------------------------------------------------

    def _run(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                data, _ = sock.recvfrom(MAX_DATAGRAM)
            except (socket.timeout, BlockingIOError, InterruptedError):
                continue
            except OSError as exc:
                if self._stop.is_set():
                    break
                self._count("errors")
                self._rlog(logging.WARNING, "recv", "OSC receive failed: %s", exc)
                time.sleep(_POLL_S)  # a persistent socket error must not spin the CPU
                continue
            try:
                self.handle_datagram(data)
            except Exception:  # handle_datagram counts its own; this is a last line of defence
                self._count("errors")
                self._rlog(logging.ERROR, "internal", "OSC datagram handling failed", exc_info=True)

    def handle_datagram(self, data: bytes) -> None:
        """Parse and apply one datagram (what the server thread does per packet; counted)."""
        self._count("received")
        try:
            parts = split_packet(data)
            messages = [OscMessage(p) for p in parts]
            decoded = [(m.address, m.params) for m in messages]
        except _NonUtf8 as exc:
            self._count("dropped_non_utf8")
            self._rlog(logging.DEBUG, "utf8", "OSC packet dropped: %s", exc)
            return
        except Exception as exc:  # MalformedPacket, python-osc ParseError, OverflowError, ...
            self._count("malformed")
            self._rlog(logging.DEBUG, "malformed", "OSC packet dropped: %s", exc)
            return
        self._count("packets")
        for address, params in decoded:
            self._count("messages")
            try:
                self._dispatch(address, params)
            except Exception:
                self._count("errors")
                self._rlog(
                    logging.ERROR, "dispatch", "OSC message %s failed", quote(address), exc_info=True
                )

    def _dispatch(self, address: str, params: list[Any]) -> None:
        row = ADDRESSES.get(address)  # exact lookup: patterns are never expanded
        if row is None:
            self._count("unknown_address")
            self._rlog(logging.DEBUG, "unknown", "OSC: unknown address %s", quote(address))
            return
        try:
            if row.path is not None:
                self._apply_control(row, params)
            else:
                self._run_action(row, params)
        except _NonFinite as exc:
            self._count("non_finite")
            self._rlog(logging.DEBUG, "nonfinite", "OSC %s: %s", address, exc)
        except (_BadArgs, ControlError) as exc:
            self._count("bad_args")
            self._rlog(logging.DEBUG, "badargs", "OSC %s: %s", address, exc)

    def _apply_control(self, row: OscAddress, params: list[Any]) -> None:
        assert row.path is not None and row.spec is not None
        path = row.path
        value = _control_value(row.spec, params)
        stored: list[Any] = []

        def change(c: Controls) -> Controls:
            new = set_path(c, path, value)  # ControlError -> nothing changes
            stored.append(get_path(new, path))
            return new

        self._controls.update(change)
        with self._lock:
            self._counts["applied"] += 1
            self._from_osc[path] = stored[0]
            if isinstance(row.spec, VectorSpec):  # the UI may report the elements one by one
                for i, item in enumerate(stored[0]):
                    self._from_osc[f"{path}.{i}"] = item
        self._changed(path, stored[0])

    def _changed(self, path: str, value: Any) -> None:
        if self._on_change is None:
            return
        try:
            self._on_change(path, value)
        except Exception:
            self._count("callback_errors")
            self._rlog(logging.ERROR, "on_change", "OSC on_change callback failed", exc_info=True)

    def _run_action(self, row: OscAddress, params: list[Any]) -> None:
        name = row.action
        assert name is not None
        kind = ACTIONS[name][0]
        if kind == "preset":
            x = _one(params, "preset name or index")
            if isinstance(x, str):
                arg: Any = x
            else:
                f = _number(x, "preset index")
                if f != round(f):
                    raise _BadArgs(f"preset index must be whole, got {f!r}")
                arg = int(round(f))
        elif kind == "switch":
            arg = _truthy(_one(params, "on/off"), "on/off")
        else:  # trigger
            if len(params) > 1:
                raise _BadArgs(f"expected at most 1 argument, got {len(params)}")
            if params and not _truthy(params[0], "trigger"):
                self._count("ignored")  # button release
                return
            arg = None
        fn = self._actions.get(name)
        if fn is None and name == "seed/reroll":
            fn = self._reroll
        if fn is None:
            self._count("no_handler")
            self._rlog(logging.INFO, f"nohandler:{name}", "OSC action %s has no handler here", name)
            return
        try:
            fn(arg)
        except Exception:
            self._count("action_errors")
            self._rlog(logging.ERROR, f"action:{name}", "OSC action %s failed", name, exc_info=True)
            return
        self._count("actions")

    def _reroll(self, _: Any) -> None:
        seed = self._rng.randint(0, MAX_SEED)
        self._controls.update(lambda c: c.replace(seed=seed))
        self._changed("seed", seed)

    # -- feedback ----------------------------------------------------------------------------

    def notify_ui_change(self, path: str, value: Any) -> bool:
        """Send ``/vjapp/<path> value`` to the feedback target for a change made in the UI.

        Call it from any thread after the UI changed a control. Returns True if a message was
        sent; False without a feedback target, when the server is stopped, or when ``value``
        is what OSC itself last set for ``path`` (no echo). Raises :class:`ControlError` for an
        unknown path or an invalid value.
        """
        spec = CONTROL_SPECS.get(path)
        if spec is None:
            raise ControlError(f"unknown control {path!r}")
        value = spec.coerce(path, value)
        sock, target = self._sock, self._feedback_addr
        if sock is None or target is None:
            return False
        with self._lock:
            if path in self._from_osc:
                if _same(spec, self._from_osc[path], value):
                    self._counts["feedback_suppressed"] += 1
                    return False
                del self._from_osc[path]  # the UI moved on: later changes are sent
        builder = OscMessageBuilder(address=address_for_path(path))
        for item in value if isinstance(value, tuple) else (value,):
            builder.add_arg(int(item) if isinstance(item, bool) else item)  # DAWs read 1/0
        try:
            sock.sendto(builder.build().dgram, target)
        except OSError as exc:
            self._count("feedback_errors")
            self._rlog(logging.WARNING, "feedback", "OSC feedback to %s failed: %s", target, exc)
            return False
        self._count("feedback_sent")
        return True

    def notify_ui_diff(self, old: Controls, new: Controls) -> int:
        """:meth:`notify_ui_change` for every leaf control that differs (e.g. after a preset).

        Returns the number of messages sent.
        """
        sent = 0
        for path, spec in CONTROL_SPECS.items():
            if isinstance(spec, VectorSpec):
                continue  # its elements are leaves of their own
            value = get_path(new, path)
            if get_path(old, path) != value and self.notify_ui_change(path, value):
                sent += 1
        return sent


def _same(spec: Spec, a: Any, b: Any) -> bool:
    """Equal, with floats within 1/1000 of the spec's range (a slider's quantization)."""
    if isinstance(spec, FloatSpec) and isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-3 * (spec.hi - spec.lo)
    if isinstance(spec, VectorSpec):
        tol = 1e-3 * (spec.hi - spec.lo)
        return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))
    return bool(a == b)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m vjapp.osc --markdown``: print the OSC address table."""
    parser = argparse.ArgumentParser(prog="python -m vjapp.osc", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--markdown", action="store_true", help="print the address table as Markdown"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        print(address_table_markdown(), end="")
    else:
        for row in ADDRESS_TABLE:
            print(f"{row.address:36s} {row.kind:16s} {row.range}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
