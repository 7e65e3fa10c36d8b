"""OSC server over real loopback UDP with python-osc's own client (and raw sockets for garbage)."""

from __future__ import annotations

import math
import random
import re
import socket
import statistics
import struct
import threading
import time
from typing import Any, Callable

import pytest
from pythonosc import dispatcher as osc_dispatcher
from pythonosc.osc_bundle_builder import IMMEDIATELY, OscBundleBuilder
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder
from pythonosc.udp_client import SimpleUDPClient

from vjapp import osc
from vjapp.engine.controls import (
    CONTROL_SPECS,
    BoolSpec,
    ChoiceSpec,
    Controls,
    FloatSpec,
    IntSpec,
    SizeSpec,
    StrSpec,
    VectorSpec,
    get_path,
)
from vjapp.engine.mailbox import Mailbox
from vjapp.osc import ACTIONS, ADDRESS_TABLE, OscError, OscServer, address_table_markdown
from vjapp.presets import PresetLibrary, PresetPlayer

F32 = 1e-6  # python-osc sends Python floats as float32


def wait_until(pred: Callable[[], bool], timeout: float = 2.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.001)
    return pred()


class Rig:
    """A started server, its mailbox, a python-osc client and a raw socket, plus action calls."""

    def __init__(self, **kwargs: Any) -> None:
        self.mb: Mailbox[Controls] = Mailbox(Controls())
        self.calls: list[tuple[str, Any, str]] = []
        if "actions" not in kwargs:
            kwargs["actions"] = {name: self._recorder(name) for name in ACTIONS if name != "seed/reroll"}
        self.server = OscServer(self.mb, port=0, **kwargs)
        self.server.start()
        self.client = SimpleUDPClient("127.0.0.1", self.server.port)
        self.raw = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def _recorder(self, name: str) -> Callable[[Any], None]:
        def fn(arg: Any) -> None:
            self.calls.append((name, arg, threading.current_thread().name))
        return fn

    def close(self) -> None:
        self.client.close()
        self.raw.close()
        self.server.stop()

    @property
    def controls(self) -> Controls:
        return self.mb.get()[1]

    def send(self, address: str, value: Any) -> None:
        self.client.send_message(address, value)

    def send_raw(self, data: bytes) -> None:
        self.raw.sendto(data, ("127.0.0.1", self.server.port))

    def send_wait(self, address: str, value: Any) -> Controls:
        """Send one control message and wait until the mailbox moved."""
        v = self.mb.version
        self.send(address, value)
        assert self.mb.wait_newer(v, 2.0), f"{address} {value!r} did not change the controls"
        return self.controls

    def sync(self, key: str, target: int) -> None:
        assert wait_until(lambda: self.server.stats()[key] >= target), (key, target, self.server.stats())


@pytest.fixture
def rig():
    r = Rig()
    yield r
    r.close()


def check_sums(s: dict[str, int]) -> None:
    assert s["received"] == s["packets"] + s["malformed"] + s["dropped_non_utf8"], s
    assert s["messages"] == (
        s["applied"] + s["actions"] + s["ignored"] + s["unknown_address"] + s["bad_args"]
        + s["non_finite"] + s["no_handler"] + s["action_errors"] + s["errors"]
    ), s


def msg(address: str, *args: Any, types: str | None = None) -> bytes:
    b = OscMessageBuilder(address=address)
    for i, a in enumerate(args):
        b.add_arg(a, types[i] if types else None)
    return b.build().dgram


# -------------------------------------------------------------------------------------------
# Address table
# -------------------------------------------------------------------------------------------


def test_address_table_has_every_control_and_action(capsys):
    paths = [row.path for row in ADDRESS_TABLE if row.path is not None]
    assert paths == list(CONTROL_SPECS)
    addrs = {row.address for row in ADDRESS_TABLE}
    assert "/vjapp/mix/coarse/strength" in addrs and "/vjapp/group_gains/fine" in addrs
    assert {"/vjapp/prompt", "/vjapp/seed", "/vjapp/source_weights/0", "/vjapp/source_weights"} <= addrs
    for name in ("preset", "preset/next", "preset/prev", "record", "source/play", "source/pause",
                 "source/toggle", "seed/reroll", "tempo/tap"):
        assert f"/vjapp/{name}" in addrs
    md = address_table_markdown()
    assert all(f"`{a}`" in md for a in addrs)
    assert md.count("\n| `/vjapp/") == len(ADDRESS_TABLE)
    assert osc.main(["--markdown"]) == 0
    assert capsys.readouterr().out == md


# -------------------------------------------------------------------------------------------
# Every control address
# -------------------------------------------------------------------------------------------


def _cases(spec) -> list[tuple[Any, Any]]:
    """(value sent, value expected in Controls) for one spec: ints, floats, clamping."""
    if isinstance(spec, FloatSpec):
        lo, hi = spec.lo, spec.hi
        mid = lo + 0.37 * (hi - lo)
        return [(mid, mid), (int(math.ceil(lo)) + 1 if hi >= lo + 1 else 0, None),
                (hi + 100.0, hi), (int(lo) - 100, lo), (hi - 0.25 * (hi - lo), hi - 0.25 * (hi - lo))]
    if isinstance(spec, IntSpec):
        return [(12345, 12345), (77.6, 78), (-5, spec.lo), (2**31 - 1, min(2**31 - 1, spec.hi)), (3, 3)]
    if isinstance(spec, BoolSpec):
        return [(True, True), (0, False), (1.0, True), (0.0, False), (7, True), (False, False)]
    if isinstance(spec, StrSpec):
        return [("a volcano erupting at night", "a volcano erupting at night"), ("  wind ", "wind"),
                ("x" * (spec.max_len + 50), "x" * spec.max_len)]
    if isinstance(spec, ChoiceSpec):
        c = spec.choices
        return [(c[-1], c[-1]), (0, c[0]), (c[1].upper(), c[1]), (99.0, c[-1]), (1, c[1])]
    if isinstance(spec, SizeSpec):
        return [(256, 256), (300.0, 256), ("native", "native"), (5000, 1024), (64, 64)]
    if isinstance(spec, VectorSpec):
        return [([0.25, 0.75], (0.25, 0.75)), ([2, -1], (1.0, 0.0)), ([0.5, 0.5], (0.5, 0.5))]
    raise AssertionError(spec)


def test_every_address_moves_its_control(rig):
    n = 0
    for row in ADDRESS_TABLE:
        if row.path is None:
            continue
        for sent, expected in _cases(row.spec):
            if expected is None:  # int sent to a float control
                expected = min(max(float(sent), row.spec.lo), row.spec.hi)
            c = rig.send_wait(row.address, sent)
            n += 1
            got = get_path(c, row.path)
            if isinstance(expected, float):
                assert isinstance(got, float) and got == pytest.approx(expected, rel=F32, abs=F32), row.address
            elif isinstance(expected, tuple):
                assert got == pytest.approx(expected, rel=F32), row.address
            else:
                assert got == expected and type(got) is type(expected), (row.address, sent, got)
    s = rig.server.stats()
    assert s["applied"] == n and s["errors"] == 0 and s["bad_args"] == 0
    check_sums(s)


def test_non_finite_and_bad_args_are_rejected_and_change_nothing(rig):
    before = rig.mb.version
    nan_cases = [("/vjapp/gain", float("nan")), ("/vjapp/gain", float("inf")),
                 ("/vjapp/mix/fine/strength", float("-inf")), ("/vjapp/seed", float("nan")),
                 ("/vjapp/paused", float("nan")), ("/vjapp/source_weights", [0.5, float("nan")]),
                 ("/vjapp/size", float("inf")), ("/vjapp/noise_mode", float("nan"))]
    for address, value in nan_cases:
        rig.send(address, value)
    rig.send_raw(msg("/vjapp/gain", float("nan"), types="d"))  # double NaN too
    rig.sync("non_finite", len(nan_cases) + 1)
    bad = [("/vjapp/gain", None), ("/vjapp/gain", [1.0, 2.0]), ("/vjapp/gain", "loud"),
           ("/vjapp/prompt", 3.0), ("/vjapp/size", "huge"), ("/vjapp/noise_mode", "purple"),
           ("/vjapp/source_weights", [0.5]), ("/vjapp/paused", "yes"), ("/vjapp/seed", b"\x01\x02"),
           ("/vjapp/preset", 2.5), ("/vjapp/record", None), ("/vjapp/source/play", [1, 1])]
    for address, value in bad:
        rig.send(address, value)
    rig.send_raw(msg("/vjapp/gain", [1.0, 2.0]))  # an OSC array
    rig.sync("bad_args", len(bad) + 1)
    time.sleep(0.02)
    assert rig.mb.version == before and rig.controls == Controls()
    assert rig.calls == []
    s = rig.server.stats()
    assert s["applied"] == 0 and s["errors"] == 0
    check_sums(s)


# -------------------------------------------------------------------------------------------
# Actions
# -------------------------------------------------------------------------------------------


def test_actions_fire_on_the_server_thread(rig):
    sends = [("/vjapp/preset", "storm"), ("/vjapp/preset", 2), ("/vjapp/preset", 3.0),
             ("/vjapp/record", 1), ("/vjapp/record", 0.0), ("/vjapp/record", True),
             ("/vjapp/source/play", None), ("/vjapp/source/pause", 1.0), ("/vjapp/source/toggle", True),
             ("/vjapp/preset/next", None), ("/vjapp/preset/prev", 1)]
    for address, value in sends:
        rig.send(address, value)
    rig.send("/vjapp/source/play", 0.0)  # a button release: ignored
    rig.sync("actions", len(sends))
    rig.sync("ignored", 1)
    got = [(name, arg) for name, arg, _ in rig.calls]
    assert got == [("preset", "storm"), ("preset", 2), ("preset", 3), ("record", True),
                   ("record", False), ("record", True), ("source/play", None),
                   ("source/pause", None), ("source/toggle", None), ("preset/next", None),
                   ("preset/prev", None)]
    assert isinstance(got[2][1], int)
    assert {thread for _, _, thread in rig.calls} == {"vjapp-osc"}
    check_sums(rig.server.stats())


def test_rhythm_controls_and_tap_over_osc(rig):
    c = rig.send_wait("/vjapp/rhythm/quantize", "bar")
    assert c.rhythm.quantize == "bar"
    c = rig.send_wait("/vjapp/rhythm/low/group", "fine")
    assert c.rhythm.low.group == "fine"
    c = rig.send_wait("/vjapp/rhythm/amount", 99.0)  # clamped like every control
    assert c.rhythm.amount == 8.0
    c = rig.send_wait("/vjapp/rhythm/tempo_source", 1)  # a choice by index
    assert c.rhythm.tempo_source == "tap"
    rig.send("/vjapp/tempo/tap", None)
    rig.sync("actions", 1)
    assert [call[0] for call in rig.calls] == ["tempo/tap"]


def test_seed_reroll_builtin_missing_handlers_and_failing_actions():
    def boom(_: Any) -> None:
        raise RuntimeError("recorder exploded")

    r = Rig(actions={"record": boom})
    try:
        seeds = set()
        for _ in range(3):
            seeds.add(r.send_wait("/vjapp/seed/reroll", None).seed)
        assert len(seeds) == 3
        r.send("/vjapp/record", 1)
        r.send("/vjapp/source/play", None)
        r.sync("action_errors", 1)
        r.sync("no_handler", 1)
        c = r.send_wait("/vjapp/gain", 2.0)  # still serving
        assert c.gain == 2.0 and r.server.running
        check_sums(r.server.stats())
    finally:
        r.close()
    with pytest.raises(OscError, match="unknown OSC action"):
        OscServer(Mailbox(Controls()), actions={"launch": print})


def test_preset_actions_with_a_real_library(tmp_path):
    mb: Mailbox[Controls] = Mailbox(Controls())
    applied: list[str] = []
    player = PresetPlayer(PresetLibrary(user_dir=tmp_path), mb,
                          on_applied=lambda p, old, new: applied.append(p.name))
    server = OscServer(mb, actions=player.osc_actions(), port=0)
    with server, SimpleUDPClient("127.0.0.1", server.port) as client:
        v = mb.version
        client.send_message("/vjapp/preset", "storm")
        assert mb.wait_newer(v, 2.0)
        c = mb.get()[1]
        assert c.gain == 2.5 and c.loudness_reactivity == 2.0 and c.prompt == "thunderstorm"
        names = player.library.names()
        v = mb.version
        client.send_message("/vjapp/preset", names.index("calm-drift"))
        assert mb.wait_newer(v, 2.0) and mb.get()[1].smoothing == 0.9
        v = mb.version
        client.send_message("/vjapp/preset/next", 1.0)
        assert mb.wait_newer(v, 2.0)
        assert player.current == names[(names.index("calm-drift") + 1) % len(names)]
        v = mb.version
        client.send_message("/vjapp/preset", "no-such-preset")  # the callback raises PresetError
        assert wait_until(lambda: server.stats()["action_errors"] == 1)
        assert mb.version == v
    assert applied == ["storm", "calm-drift", player.current]


# -------------------------------------------------------------------------------------------
# Exact lookup, bundles
# -------------------------------------------------------------------------------------------


def test_exact_lookup_patterns_are_unknown_and_compile_nothing(rig, monkeypatch):
    patterns = ["/vjapp/*", "/vjapp/[a-z]*", "/vjapp/{gain,seed}", "/vjapp/?ain", "//vjapp//seed",
                "/vjapp/gain/", "/VJAPP/GAIN", "/vjapp", "/vjapp/mix/*/strength", "/vjapp/preset/*",
                "/vjapp/" + "a" * 60000, "/" + "*" * 5000, "/vjapp/" + "(a+)+" * 100]
    packets = [msg(p, 1.0) for p in patterns]  # built before re is poisoned

    def no_regex(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a regular expression was compiled")

    def no_dispatcher(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("python-osc's Dispatcher was used")

    before = rig.mb.version
    with monkeypatch.context() as m:
        m.setattr(re, "compile", no_regex)
        m.setattr(re, "_compile", no_regex)
        m.setattr(osc_dispatcher.Dispatcher, "handlers_for_address", no_dispatcher)
        for p in packets:
            rig.send_raw(p)
        got_all = wait_until(lambda: rig.server.stats()["unknown_address"] == len(patterns))
    s = rig.server.stats()
    assert got_all, s
    assert s["errors"] == 0 and s["applied"] == 0 and s["messages"] == len(patterns)
    assert rig.mb.version == before
    check_sums(s)


def _bundle(timestamp: float, *messages: bytes) -> bytes:
    b = OscBundleBuilder(timestamp)
    for m in messages:
        b.add_content(OscMessage(m))
    return b.build().dgram


def test_future_bundle_is_applied_at_once(rig):
    far = time.time() + 3600.0
    data = _bundle(far, msg("/vjapp/gain", 3.0), msg("/vjapp/seed", 42))
    v = rig.mb.version
    t0 = time.perf_counter()
    rig.send_raw(data)
    assert rig.mb.wait_newer(v + 1, 1.0)  # both messages of the bundle
    dt = time.perf_counter() - t0
    assert dt < 0.050, f"bundle took {dt * 1e3:.1f} ms"
    c = rig.controls
    assert c.gain == 3.0 and c.seed == 42
    # nested bundle, outer immediate, inner in the future: applied too, in order
    inner = OscBundleBuilder(far)
    inner.add_content(OscMessage(msg("/vjapp/smoothing", 0.25)))
    outer = OscBundleBuilder(IMMEDIATELY)
    outer.add_content(OscMessage(msg("/vjapp/smoothing", 0.75)))
    outer.add_content(inner.build())
    v = rig.mb.version
    rig.send_raw(outer.build().dgram)
    assert rig.mb.wait_newer(v + 1, 1.0)
    assert rig.controls.smoothing == 0.25


# -------------------------------------------------------------------------------------------
# Malformed packets and fuzz
# -------------------------------------------------------------------------------------------

VALID = [msg("/vjapp/gain", 1.5), msg("/vjapp/seed", 7), msg("/vjapp/prompt", "wind"),
         msg("/vjapp/source_weights", 0.2, 0.8), msg("/vjapp/paused", False),
         msg("/vjapp/noise_mode", "random"), msg("/vjapp/mix/fine/strength", 0.5, types="d")]


def _hand_crafted() -> list[tuple[bytes, str]]:
    gain = msg("/vjapp/gain", 2.0)
    neg_bundle = b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", -4)  # hangs python-osc
    deep = msg("/vjapp/gain", 2.0)
    for _ in range(20):
        deep = b"#bundle\x00" + b"\x00" * 7 + b"\x01" + struct.pack(">i", len(deep)) + deep
    return [
        (b"", "malformed"),
        (b"garbage!", "malformed"),
        (b"/vjapp/gain", "malformed"),  # no NUL
        (b"/vjapp/gain\x00,f\x00\x00", "malformed"),  # float missing (python-osc would read 0.0)
        (gain[:-2], "malformed"),  # truncated float
        (gain + b"\x00\x00\x00\x00", "malformed"),  # trailing bytes
        (b"/vjapp/fps\x00\x01,f\x00\x00" + struct.pack(">f", 2.0), "malformed"),  # bad padding
        (b"/vjapp/gain\x00,q\x00\x00" + struct.pack(">f", 2.0), "malformed"),  # unknown type tag
        (b"/vjapp/gain\x00f\x00\x00\x00" + struct.pack(">f", 2.0), "malformed"),  # tags without ','
        (b"/vjapp/gain\x00,[f\x00" + struct.pack(">f", 2.0), "malformed"),  # unbalanced array
        (b"/vjapp/seed\x00,b\x00\x00" + struct.pack(">i", 0x7FFFFFFF), "malformed"),  # huge blob
        (b"/vjapp/seed\x00,b\x00\x00" + struct.pack(">i", -8) + b"\x00" * 8, "malformed"),
        (neg_bundle, "malformed"),
        (b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", 0x7FFFFFF0) + gain, "malformed"),
        (b"#bundle\x00\x00\x00", "malformed"),  # time tag truncated
        (deep, "malformed"),  # nested too deep
        (b"#bundle\x00" + b"\x00" * 8 + struct.pack(">i", len(gain)) + gain + b"\x00\x01", "malformed"),
        (b"/vjapp/\xff\xfe\x00\x00\x00,f\x00\x00" + struct.pack(">f", 2.0), "dropped_non_utf8"),
        (b"/vjapp/prompt\x00\x00\x00,s\x00\x00\xc3\x28ab\x00\x00\x00\x00", "dropped_non_utf8"),
    ]


def test_malformed_packets_are_dropped_and_counted(rig):
    cases = _hand_crafted()
    expect = {"malformed": 0, "dropped_non_utf8": 0}
    before = rig.mb.version
    for data, kind in cases:
        rig.send_raw(data)
        expect[kind] += 1
    t0 = time.monotonic()
    rig.sync("received", len(cases))
    assert time.monotonic() - t0 < 1.0  # nothing hung the thread
    s = rig.server.stats()
    assert s["malformed"] == expect["malformed"] and s["dropped_non_utf8"] == expect["dropped_non_utf8"], s
    assert rig.mb.version == before and s["errors"] == 0
    c = rig.send_wait("/vjapp/prompt", "after the storm")
    assert c.prompt == "after the storm" and rig.server.running
    check_sums(rig.server.stats())


def _mutations(rng: random.Random, n: int) -> list[bytes]:
    crafted = [d for d, _ in _hand_crafted()]
    out: list[bytes] = []
    for _ in range(n):
        k = rng.randrange(9)
        base = bytearray(rng.choice(VALID))
        if k == 0:
            out.append(rng.randbytes(rng.randrange(0, 256)))
        elif k == 1:
            out.append(rng.choice([b"/", b"#bundle\x00"]) + rng.randbytes(rng.randrange(0, 128)))
        elif k == 2:
            out.append(bytes(base[: rng.randrange(len(base))]))
        elif k == 3:
            for _ in range(rng.randrange(1, 4)):
                base[rng.randrange(len(base))] = rng.randrange(256)
            out.append(bytes(base))
        elif k == 4:
            i = base.index(b",")
            base[i + 1] = rng.choice(b"ifdsbhtTFNmr[]?qXS\xff")
            out.append(bytes(base))
        elif k == 5:
            out.append(b"/vjapp/prompt\x00\x00\x00,s\x00\x00" + rng.randbytes(8) + b"\x00\x00\x00\x00")
        elif k == 6:
            size = rng.choice([0x7FFFFFFF, -1, -4, 3, 0, len(base) + 4, len(base), len(base)])
            out.append(b"#bundle\x00" + rng.randbytes(8) + struct.pack(">i", size) + bytes(base))
        elif k == 7:
            out.append(rng.choice(crafted))
        else:
            b = OscBundleBuilder(IMMEDIATELY)
            for m in rng.sample(VALID, 3):
                b.add_content(OscMessage(m))
            d = bytearray(b.build().dgram)
            d[rng.randrange(16, len(d))] = rng.randrange(256)
            out.append(bytes(d))
    return out


def test_fuzz_then_valid_message_is_fast():
    r = Rig(actions={})
    try:
        rng = random.Random(1234)
        packets = _mutations(rng, 3000)
        for start in range(0, len(packets), 150):  # in batches: the kernel buffer must not overflow
            for p in packets[start : start + 150]:
                r.send_raw(p)
            r.sync("received", min(start + 150, len(packets)))
        s = r.server.stats()
        assert s["received"] == len(packets)
        assert s["errors"] == 0 and s["callback_errors"] == 0
        assert s["malformed"] > 500 and s["dropped_non_utf8"] > 50 and s["packets"] > 100
        check_sums(s)
        assert r.server.running
        lat = []
        for i in range(7):
            value = 0.5 + 0.25 * i
            v = r.mb.version
            t0 = time.perf_counter()
            r.send("/vjapp/gain", value)
            assert r.mb.wait_newer(v, 1.0)
            lat.append(time.perf_counter() - t0)
            assert r.controls.gain == pytest.approx(value)
        assert statistics.median(lat) < 0.010, [f"{x * 1e3:.2f} ms" for x in lat]
        check_sums(r.server.stats())
    finally:
        r.close()


# -------------------------------------------------------------------------------------------
# Feedback, binding, lifecycle
# -------------------------------------------------------------------------------------------


def test_feedback_sends_ui_changes_and_never_echoes_osc():
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.settimeout(1.0)
    changes: list[tuple[str, Any]] = []
    r = Rig(feedback=("127.0.0.1", listener.getsockname()[1]),
            on_change=lambda p, v: changes.append((p, v)))

    def received() -> OscMessage:
        return OscMessage(listener.recv(65536))

    try:
        assert r.server.notify_ui_change("gain", 2.5)
        m = received()
        assert m.address == "/vjapp/gain" and m.params == [2.5]
        assert r.server.notify_ui_change("paused", True)
        assert received().params == [1]
        assert r.server.notify_ui_change("group_gains.fine", 9.0)  # clamped like Controls
        m = received()
        assert m.address == "/vjapp/group_gains/fine" and m.params == [4.0]

        r.send_wait("/vjapp/gain", 1.5)
        assert changes == [("gain", 1.5)]
        # the GUI follows the OSC change and reports it: not sent back to the DAW
        assert not r.server.notify_ui_change("gain", 1.5)
        assert not r.server.notify_ui_change("gain", 1.5005)  # slider quantization
        r.send_wait("/vjapp/source_weights", [0.3, 0.7])
        assert not r.server.notify_ui_change("source_weights.1", 0.7)
        listener.settimeout(0.2)
        with pytest.raises(TimeoutError):
            listener.recv(65536)
        listener.settimeout(1.0)
        # a real UI change afterwards is sent
        assert r.server.notify_ui_change("gain", 3.0)
        assert received().params == [3.0]
        sent = r.server.notify_ui_diff(Controls(), Controls(seed=5, size=256, prompt="rain"))
        assert sent == 3
        got = {received().address for _ in range(3)}
        assert got == {"/vjapp/seed", "/vjapp/size", "/vjapp/prompt"}
        s = r.server.stats()
        assert s["feedback_sent"] == 7 and s["feedback_suppressed"] == 3
    finally:
        r.close()
        listener.close()
    no_fb = Rig()
    try:
        assert not no_fb.server.notify_ui_change("gain", 2.0)
    finally:
        no_fb.close()


def test_binds_loopback_busy_port_is_a_clear_error_and_stop_is_quick():
    mb: Mailbox[Controls] = Mailbox(Controls())
    first = OscServer(mb, port=0)
    assert first.host == "127.0.0.1"
    first.start()
    try:
        assert first.address == ("127.0.0.1", first.port)
        with pytest.raises(OscError, match=rf"127\.0\.0\.1:{first.port}.*in use"):
            OscServer(mb, port=first.port).start()
        with pytest.raises(OscError, match="already running"):
            first.start()
    finally:
        t0 = time.perf_counter()
        first.stop()
        assert time.perf_counter() - t0 < 0.5
    assert not first.running
    with pytest.raises(OscError, match="port"):
        OscServer(mb, port=70000)
