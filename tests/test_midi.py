"""MIDI in through real virtual MIDI ports: a userspace JACK server with the dummy driver (no sound
card) carries what a test "controller" (a virtual output port) sends to vjapp's MIDI input.

What a performer checks: a learned knob moves the gain across its range, a pad loads the next
preset, a 14-bit fader gives the fine value, the show follows a drum machine's MIDI clock at 120
and 174 BPM and lets go when it stops, a learned mapping is there again next time, a controller
unplugged mid-show is reported and works again when plugged back in, and ``--midi`` says in one
line what is wrong.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from vjapp.audio.rhythm import BeatClock
from vjapp.control.midi_clock import PPQN, MidiClock
from vjapp.control.midi_map import Binding, MidiMap, MidiMapStore
from vjapp.engine.controls import Controls
from vjapp.engine.mailbox import Mailbox


def _wait(cond: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Recorder:
    """What the MIDI input reported, as the app's message panel would show it."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, text: str, level: str) -> None:
        self.lines.append((text, level))

    def having(self, part: str) -> list[str]:
        return [t for t, _ in self.lines if part in t]


@pytest.fixture
def midi_input(jack_server: str, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    from vjapp.control.midi import MidiInput

    made: list[MidiInput] = []

    def make(port: str, controls: Mailbox[Controls] | None = None, actions: dict | None = None,
             store: MidiMapStore | None = None, **kwargs: Any) -> MidiInput:
        reports = Recorder()
        mi = MidiInput(port, controls or Mailbox(Controls()), actions or {}, api="jack",
                       store=store if store is not None else MidiMapStore(tmp_path / "midi"),
                       on_message=reports, poll_s=0.2, **kwargs)
        mi.reports = reports  # type: ignore[attr-defined]
        mi.start()
        made.append(mi)
        return mi

    yield make
    for mi in made:
        mi.stop()


def _gain(controls: Mailbox[Controls]) -> float:
    return controls.get()[1].gain


def _cc(control: int, value: int, channel: int = 0) -> Any:
    import mido

    return mido.Message("control_change", channel=channel, control=control, value=value)


def _note(note: int, velocity: int = 100, on: bool = True) -> Any:
    import mido

    return mido.Message("note_on" if on else "note_off", note=note, velocity=velocity)


# ------------------------------------------------------------------------------------------ (a)
def test_learned_knob_moves_gain_across_its_range(controller, midi_input, tmp_path):
    out = controller("knobs-a")
    controls: Mailbox[Controls] = Mailbox(Controls())
    mi = midi_input("knobs-a", controls)
    mi.start_learn("gain")
    out.send(_cc(7, 10))
    _wait(lambda: mi.mapping.binding_for("gain") is not None, what="the learned binding")
    assert mi.mapping.binding_for("gain") == Binding("cc", 0, 7, "gain")
    assert mi.reports.having("MIDI learn: CC 7 (ch 1) -> gain")
    assert _gain(controls) == 1.0  # the learning message itself sets nothing

    for value, expected in ((0, 0.0), (127, 4.0), (64, 4.0 * 64 / 127)):
        out.send(_cc(7, value))
        _wait(lambda: abs(_gain(controls) - expected) < 1e-9, what=f"gain {expected}")
    out.send(_cc(8, 127))  # an unmapped knob changes nothing
    out.send(_cc(7, 0))
    _wait(lambda: _gain(controls) == 0.0)
    assert controls.get()[1] == Controls(gain=0.0)


# ------------------------------------------------------------------------------------------ (b)
def test_pad_bound_to_next_preset_calls_it_and_a_pad_toggles_pause(controller, midi_input):
    out = controller("pads-b")
    calls: list[Any] = []
    controls: Mailbox[Controls] = Mailbox(Controls())
    mi = midi_input("pads-b", controls, {"preset/next": calls.append})
    mi.start_learn("preset/next")
    out.send(_note(36))
    _wait(lambda: mi.mapping.binding_for("preset/next") is not None)
    assert calls == []  # the learning hit only learns

    out.send(_note(36, on=False))
    out.send(_note(36))
    _wait(lambda: len(calls) == 1, what="preset/next")
    out.send(_note(36, on=False))
    out.send(_note(36, velocity=0))  # a note-on with velocity 0 is a release
    out.send(_note(36))
    _wait(lambda: len(calls) == 2)
    time.sleep(0.1)
    assert calls == [None, None]

    mi.mapping.bind(Binding("note", 0, 37, "paused"))
    out.send(_note(37))
    _wait(lambda: controls.get()[1].paused is True, what="paused on")
    out.send(_note(37))
    _wait(lambda: controls.get()[1].paused is False, what="paused off")


# ------------------------------------------------------------------------------------------ (c)
def test_14_bit_fader_gives_the_fine_value(controller, midi_input, tmp_path):
    out = controller("fader-c")
    controls: Mailbox[Controls] = Mailbox(Controls())
    mi = midi_input("fader-c", controls)
    mi.start_learn("gain")
    out.send(_cc(1, 20))  # MSB ...
    out.send(_cc(33, 0))  # ... then LSB: the controller sends 14-bit values
    _wait(lambda: (b := mi.mapping.binding_for("gain")) is not None and b.fine, what="a 14-bit binding")

    out.send(_cc(1, 50))
    out.send(_cc(33, 100))
    fine = 4.0 * (50 * 128 + 100) / 16383
    _wait(lambda: abs(_gain(controls) - fine) < 1e-9, what=f"gain {fine}")
    assert abs(fine - 4.0 * 50 / 127) > 0.01  # finer than any 7-bit step gives
    out.send(_cc(33, 101))  # an LSB alone moves the last bit
    _wait(lambda: abs(_gain(controls) - 4.0 * (50 * 128 + 101) / 16383) < 1e-9)
    out.send(_cc(1, 127))
    out.send(_cc(33, 127))
    _wait(lambda: _gain(controls) == 4.0)
    saved = json.loads(MidiMapStore(tmp_path / "midi").path_for(mi.port_name).read_text())
    assert saved["bindings"] == [{"kind": "cc", "channel": 0, "number": 1, "target": "gain", "fine": True}]


# ------------------------------------------------------------------------------------------ (d)
def _play_clock(out: Any, bpm: float, seconds: float, sent: list[float], stop_after: bool) -> None:
    import mido

    period = 60.0 / bpm / PPQN
    out.send(mido.Message("start"))
    t0 = time.perf_counter() + 0.01
    k = 0
    while True:
        due = t0 + k * period
        if due - t0 > seconds:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        sent.append(time.perf_counter())
        out.send(mido.Message("clock"))
        k += 1
    if stop_after:
        out.send(mido.Message("stop"))


@pytest.mark.parametrize("bpm", [120.0, 174.0])
def test_midi_clock_gives_tempo_and_beat(controller, midi_input, bpm):
    out = controller(f"drums-{int(bpm)}")
    mi = midi_input(f"drums-{int(bpm)}")
    engine_clock = BeatClock(audio=MidiClock())  # a source that never knows: only MIDI clock can answer
    engine_clock.set_external(mi.clock)
    engine_clock.choice = "external"

    sent: list[float] = []
    player = threading.Thread(target=_play_clock, args=(out, bpm, 2.6, sent, True))
    player.start()
    time.sleep(2.0)
    now = time.perf_counter()
    state = engine_clock.beat_at(now)
    expected_beat = (now - sent[0]) * bpm / 60.0  # the first tick after start is beat 0
    player.join()
    assert state is not None and state.source == "midi"
    assert abs(state.bpm - bpm) <= 1.0, state
    assert abs(state.beat - expected_beat) <= 0.05, (state.beat, expected_beat)
    assert state.confidence > 0.5

    _wait(lambda: not mi.clock.running, what="the stop")
    assert mi.clock.beat_at(time.perf_counter()) is None
    assert engine_clock.beat_at(time.perf_counter()) is None


def test_midi_clock_logic_start_stop_continue_and_jitter():
    """The clock on its own, with made-up arrival times (no port): jitter, start, stop, continue."""
    import numpy as np

    rng = np.random.default_rng(1)
    clock = MidiClock()
    period = 60.0 / 128.0 / PPQN
    clock.handle("start", 0.0)
    assert clock.beat_at(0.0) is None
    t = 0.0
    for k in range(96):  # 4 beats, +-4 ms of jitter on every tick
        t = 1.0 + k * period
        clock.handle("clock", t + rng.uniform(-0.004, 0.004))
        if k == 5:
            assert clock.beat_at(t) is None  # not enough ticks yet
    state = clock.beat_at(t)
    assert state is not None and abs(state.bpm - 128.0) < 0.5 and abs(state.beat - 95 / PPQN) < 0.03
    clock.handle("stop", t + 0.01)
    assert clock.beat_at(t + 0.02) is None
    clock.handle("continue", t + 1.0)
    for k in range(1, 25):
        clock.handle("clock", t + 1.0 + k * period)
    resumed = clock.beat_at(t + 1.0 + 24 * period)
    assert resumed is not None and abs(resumed.beat - (95 + 24) / PPQN) < 0.01  # went on from where it stopped
    assert clock.beat_at(t + 1.0 + 24 * period + 2.0) is None  # ticks stopped coming: the clock let go
    clock.handle("start", t + 5.0)
    for k in range(24):
        clock.handle("clock", t + 5.0 + k * period)
    restarted = clock.beat_at(t + 5.0 + 23 * period)
    assert restarted is not None and abs(restarted.beat - 23 / PPQN) < 0.01  # start: from beat 0 again


# ------------------------------------------------------------------------------------------ (e)
def test_mapping_is_saved_and_loaded_for_the_same_controller(controller, midi_input, tmp_path):
    out = controller("nano-e")
    store = MidiMapStore(tmp_path / "maps")
    first = midi_input("nano-e", store=store)
    first.start_learn("truncation_psi")
    out.send(_cc(14, 3))
    _wait(lambda: first.mapping.binding_for("truncation_psi") is not None)
    first.start_learn("tempo/tap")
    out.send(_note(40))
    _wait(lambda: first.mapping.binding_for("tempo/tap") is not None)
    assert store.path_for(first.port_name).is_file()
    first.stop()

    controls: Mailbox[Controls] = Mailbox(Controls())
    taps: list[Any] = []
    again = midi_input("nano-e", controls, {"tempo/tap": taps.append}, store=store)
    assert again.reports.having("2 saved mappings")
    out.send(_cc(14, 127))
    out.send(_note(40))
    _wait(lambda: controls.get()[1].truncation_psi == 1.5 and len(taps) == 1, what="the saved mapping working")

    # exported and imported (a preset can carry it), and another controller starts empty
    copy = MidiMap.from_dict(json.loads(json.dumps(again.mapping.to_dict())))
    assert sorted(b.target for b in copy.bindings) == ["tempo/tap", "truncation_psi"]
    assert store.load("some other controller").bindings == []


# ------------------------------------------------------------------------------------------ (f)
def test_vanished_port_is_reported_and_reopened(controller, midi_input):
    out = controller("unplug-f")
    controls: Mailbox[Controls] = Mailbox(Controls())
    mi = midi_input("unplug-f", controls)
    mi.mapping.bind(Binding("cc", 0, 7, "gain"))
    out.send(_cc(7, 0))
    _wait(lambda: _gain(controls) == 0.0)

    out.close()  # the cable is pulled
    _wait(lambda: bool(mi.reports.having("disappeared")), what="the report")
    assert not mi.connected
    time.sleep(0.5)  # several polls later: still one message
    assert len(mi.reports.having("disappeared")) == 1

    out = controller("unplug-f")  # plugged back in
    _wait(lambda: mi.connected, what="the reconnection")
    assert mi.reports.having("is back")
    out.send(_cc(7, 127))
    _wait(lambda: _gain(controls) == 4.0, what="messages flowing again")


# ------------------------------------------------------------------------------------------ (g)
def test_midi_option_without_mido_is_one_line(monkeypatch, capsys):
    from vjapp import cli

    monkeypatch.setitem(sys.modules, "mido", None)  # import mido -> ImportError
    assert cli.main(["gui", "--midi", "nanoKONTROL"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert 'pip install "vjapp[midi]"' in err and "--midi" in err
    assert cli.main(["devices", "--midi"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and 'pip install "vjapp[midi]"' in err


def test_midi_option_with_a_bad_port_name_is_one_line(controller, capsys):
    from vjapp import cli

    controller("real-g")
    assert cli.main(["gui", "--midi", "no-such-controller", "--midi-api", "jack"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "no MIDI input 'no-such-controller'" in err and "real-g" in err
    assert cli.main(["devices", "--midi", "--midi-api", "jack"]) == 0
    assert "real-g" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:  # argparse's own check, as for the other options
        cli.main(["gui", "--midi", " "])
    assert exited.value.code == 2
    assert "argument --midi: expected a MIDI input's index or name" in capsys.readouterr().err


def test_mapping_logic_without_ports():
    """Pure MidiMap: ranges of every kind of control, action edges, and rejected targets."""
    m = MidiMap([Binding("cc", 0, 1, "rhythm.quantize"), Binding("cc", 0, 2, "paused"),
                 Binding("cc", 0, 3, "record"), Binding("cc", 0, 4, "seed/reroll"), Binding("cc", 2, 5, "fps")])

    class Msg:
        def __init__(self, **kw: Any) -> None:
            self.__dict__.update(kw)

    def effects(control: int, value: int, channel: int = 0) -> tuple:
        return m.handle(Msg(type="control_change", channel=channel, control=control, value=value)).effects

    assert [e.value for v in (0, 42, 43, 127) for e in effects(1, v)] == ["off", "off", "beat", "bar"]
    assert [e.value for v in (63, 64) for e in effects(2, v)] == [False, True]
    assert [e.arg for v in (127, 100, 0, 127) for e in effects(3, v)] == [True, False, True]
    assert len([e for v in (10, 70, 90, 20, 80) for e in effects(4, v)]) == 2  # fires on each rise past 64
    assert effects(5, 127) == () and effects(5, 127, channel=2)[0].value == 240.0  # channels are apart
    with pytest.raises(ValueError, match="neither a control nor a MIDI action"):
        m.start_learn("no.such.control")
    with pytest.raises(ValueError, match="prompt"):
        m.start_learn("prompt")  # text: no knob can set it


# ------------------------------------------------------------------------------------------ the app
def test_app_learns_from_the_slider_menu_and_follows_midi_clock(qtbot, controller, tmp_path, tiny_bundle_dir):
    """``vjapp --midi PORT``: right-click "MIDI learn" on the gain slider, turn a knob, the slider
    follows; MIDI clock becomes the engine's external tempo; the port closes with the app."""
    import mido

    from vjapp.app import build_app
    from vjapp.gui import default_args

    out = controller("app-h")
    ctx = build_app(default_args(bundle=str(tiny_bundle_dir), windowed=True, no_osc=True, mute=True, threads=1,
                                 settings=str(tmp_path / "settings.ini"), data_dir=str(tmp_path / "data"),
                                 record_dir=str(tmp_path / "rec"), midi="app-h", midi_api="jack"))
    try:
        ctx.show()
        assert ctx.midi is not None and ctx.midi.connected
        slider = ctx.window._sliders["gain"]
        menu = slider.context_menu()
        assert menu is not None
        learn = next(a for a in menu.actions() if a.text().startswith("MIDI learn"))
        learn.trigger()
        out.send(_cc(21, 5))
        _wait(lambda: ctx.midi.mapping.binding_for("gain") is not None, what="the learned binding")
        out.send(_cc(21, 127))
        qtbot.waitUntil(lambda: slider.value() == 4.0, timeout=5000)  # the widget follows the mailbox
        assert (tmp_path / "data" / "midi").is_dir() and any((tmp_path / "data" / "midi").glob("*.json"))

        out.send(mido.Message("start"))
        for _ in range(30):
            out.send(mido.Message("clock"))
            time.sleep(60.0 / 140.0 / PPQN)
        _wait(lambda: ctx.engine.beat_clock.external is ctx.midi.clock, what="the clock attached")
        qtbot.waitUntil(lambda: any("MIDI clock arrives" in text for _, text in ctx.window.messages), timeout=5000)
    finally:
        midi = ctx.midi
        ctx.shutdown()
    assert midi is not None and not midi.running


def test_app_without_the_midi_port_plays_on_with_a_message(qtbot, jack_server, tmp_path, tiny_bundle_dir):
    from vjapp.app import build_app
    from vjapp.gui import default_args

    ctx = build_app(default_args(bundle=str(tiny_bundle_dir), windowed=True, no_osc=True, mute=True, threads=1,
                                 settings=str(tmp_path / "settings.ini"), data_dir=str(tmp_path / "data"),
                                 record_dir=str(tmp_path / "rec"), midi="gone-controller", midi_api="jack"))
    try:
        assert ctx.midi is None and "no MIDI input 'gone-controller'" in (ctx.midi_error or "")
        ctx.midi_learn("gain")  # says why it cannot, and nothing breaks
        assert ctx.engine is not None
    finally:
        ctx.shutdown()
