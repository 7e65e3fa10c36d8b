"""The rig from the control window: choose the MIDI input, MIDI-learn a checkbox from its right-click
menu (and forget it), keep the mapping in a preset, and send the output over NDI from a checkbox.

MIDI goes through real virtual ports on the JACK dummy server (``jack_server`` / ``controller`` in
midi_fixtures.py); NDI through a real receiver on loopback (tests/test_sinks.py's helper).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
from PyQt6.QtCore import Qt

from vjapp.app import AppContext
from vjapp.presets import Preset, PresetError


def _cc(control: int, value: int, channel: int = 0) -> Any:
    import mido

    return mido.Message("control_change", channel=channel, control=control, value=value)


def _menu_action(menu: Any, prefix: str) -> Any:
    return next(a for a in menu.actions() if a.text().startswith(prefix))


@pytest.fixture
def make_app(make_app: Callable[..., AppContext]) -> Callable[..., AppContext]:
    """conftest's apps, without OSC and with MIDI over the tests' JACK server."""
    return functools.partial(make_app, no_osc=True, midi_api="jack")


def _paused(ctx: AppContext) -> bool:
    return ctx.controls.get()[1].paused


def test_choose_the_midi_input_learn_the_freeze_checkbox_and_forget_it(make_app, controller, qtbot):
    out = controller("rig-a")
    ctx = make_app()
    win = ctx.window
    assert ctx.midi is None and win.midi_label.text().startswith("MIDI off")
    # Refresh lists the port; choosing it in the combo opens it
    win.midi_refresh_button.click()
    index = win.midi_combo.findText("rig-a", flags=Qt.MatchFlag.MatchContains)
    assert index > 0 and win.midi_combo.itemText(0) == "none"
    win.midi_combo.activated.emit(index)
    assert ctx.midi is not None and ctx.midi.connected and "rig-a" in ctx.midi.port_name
    assert "rig-a" in win.midi_label.text()

    # right-click "MIDI learn" on the Freeze checkbox: the MIDI box says what it waits for
    menu = win.midi_menu_for("paused")
    assert menu is not None and all(not a.text().startswith("Forget") for a in menu.actions())
    _menu_action(menu, "MIDI learn").trigger()
    assert "MIDI learn: move a control for paused" in win.midi_label.text()
    out.send(_cc(22, 0))
    qtbot.waitUntil(lambda: ctx.midi.mapping.binding_for("paused") is not None, timeout=5000)
    win.refresh_status()
    assert "MIDI learn" not in win.midi_label.text()

    # the learned CC toggles pause, and the checkbox follows
    out.send(_cc(22, 127))
    qtbot.waitUntil(lambda: _paused(ctx) and win.pause_picture.isChecked(), timeout=5000)
    out.send(_cc(22, 0))
    qtbot.waitUntil(lambda: not _paused(ctx) and not win.pause_picture.isChecked(), timeout=5000)

    # "Forget MIDI mapping" names the knob and removes the binding (also from the saved file)
    menu = win.midi_menu_for("paused")
    forget = _menu_action(menu, "Forget MIDI mapping")
    assert "CC 22 (ch 1)" in forget.text()
    forget.trigger()
    assert ctx.midi.mapping.binding_for("paused") is None
    saved = json.loads(ctx.midi.store.path_for(ctx.midi.port_name).read_text())
    assert all(b["target"] != "paused" for b in saved["bindings"])
    received = ctx.midi.counts["received"]
    out.send(_cc(22, 127))
    qtbot.waitUntil(lambda: ctx.midi.counts["received"] > received, timeout=5000)
    assert not _paused(ctx)

    # action buttons and combo boxes offer learn too; "none" closes the input
    for target in ("tempo/tap", "seed/reroll", "record", "preset/next", "preset/prev", "seed",
                   "rhythm.quantize", "rhythm.tempo_source", "rhythm.low.group", "noise_mode"):
        assert win.midi_menu_for(target) is not None, target
    midi = ctx.midi
    win.midi_combo.activated.emit(0)
    assert ctx.midi is None and not midi.running and win.midi_label.text().startswith("MIDI off")


def test_a_preset_saved_with_the_mapping_restores_it(make_app, controller, qtbot):
    out = controller("rig-b")
    ctx = make_app(midi="rig-b")
    win = ctx.window
    assert ctx.midi is not None
    win.midi_menu_for("gain").actions()[0].trigger()
    out.send(_cc(7, 10))
    qtbot.waitUntil(lambda: ctx.midi.mapping.binding_for("gain") is not None, timeout=5000)

    dialog = win.preset_save_dialog()
    assert dialog.midi_check.isEnabled() and "rig-b" in dialog.midi_check.text()
    dialog.name_edit.setText("with knobs")
    dialog.midi_check.setChecked(True)
    win.save_preset_from(dialog)
    data = json.loads(Path(ctx.presets.library.user_dir / "with knobs.json").read_text())
    assert data["midi"]["controller"] == ctx.midi.controller
    assert [b["number"] for b in data["midi"]["bindings"]] == [7]

    ctx.midi_forget("gain")  # a different mapping now...
    assert ctx.midi.mapping.binding_for("gain") is None
    ctx.load_preset("with knobs")  # ...and the preset brings the saved one back
    assert ctx.midi.mapping.binding_for("gain").number == 7
    out.send(_cc(7, 127))
    qtbot.waitUntil(lambda: ctx.controls.get()[1].gain == pytest.approx(4.0), timeout=5000)

    plain = win.preset_save_dialog()  # without the box: no "midi" key
    plain.name_edit.setText("plain")
    win.save_preset_from(plain)
    assert "midi" not in json.loads(Path(ctx.presets.library.user_dir / "plain.json").read_text())


def test_preset_files_with_and_without_midi_validate(tmp_path):
    mapping = {"format": "vjapp-midi-map", "version": 1, "controller": "pad",
               "bindings": [{"kind": "note", "channel": 9, "number": 36, "target": "preset/next"}]}
    old = {"format": "vjapp-preset", "version": 1, "name": "x", "controls": {"gain": 2.0}}
    assert Preset.from_dict(old, "old").midi is None
    new = Preset.from_dict(dict(old, midi=mapping), "new")
    assert new.midi == mapping and new.to_dict()["midi"] == mapping
    assert "midi" not in Preset.from_dict(old, "old").to_dict()
    bad_target = dict(mapping, bindings=[{"kind": "cc", "channel": 0, "number": 1, "target": "prompt"}])
    for bad, match in ((dict(mapping, controller=""), "controller"), ([1], "must be an object"),
                       (bad_target, "a knob or pad cannot set it"), (dict(mapping, format="x"), "not a MIDI mapping")):
        with pytest.raises(PresetError, match=match):
            Preset.from_dict(dict(old, midi=bad), "bad")
    with pytest.raises(PresetError, match="unknown key"):
        Preset.from_dict(dict(old, midis={}), "bad")


# ------------------------------------------------------------------------------------------ NDI
def test_ndi_checkbox_sends_the_output_and_follows_the_app(make_app, qtbot):
    ndi = pytest.importorskip("NDIlib", reason='NDI tests need `pip install "vjapp[ndi]"` (ndi-python)')
    from test_sinks import NdiReceiver

    ctx = make_app(ndi="vjapp-rig-test", midi_api="auto")
    ctx.set_ndi(False)  # --ndi starts it; the box starts unticked from here
    win = ctx.window
    win.refresh_status()
    assert win.ndi_check.isEnabled() and not win.ndi_check.isChecked()
    assert "vjapp-rig-test" in win.ndi_label.text()
    win.ndi_check.click()
    assert ctx.ndi is not None and ctx.ndi.wait_open(10)
    receiver = NdiReceiver(ndi, ctx.ndi.source_name)
    try:
        assert len(receiver.frames(3, timeout=30)) == 3
    finally:
        receiver.close()
    win.refresh_status()
    assert win.ndi_label.text().startswith("sending as")
    win.ndi_check.click()
    assert ctx.ndi is None
    ctx.set_ndi(True)  # what /vjapp/ndi 1 does: the box follows
    win.refresh_status()
    assert win.ndi_check.isChecked()
    ctx.set_ndi(False)
    win.refresh_status()
    assert not win.ndi_check.isChecked()


def test_ndi_checkbox_without_the_library_says_why(make_app, monkeypatch):
    monkeypatch.setitem(sys.modules, "NDIlib", None)  # import NDIlib -> ImportError
    ctx = make_app(midi_api="auto")
    win = ctx.window
    win.refresh_status()
    assert not win.ndi_check.isEnabled()
    assert 'pip install "vjapp[ndi]"' in win.ndi_label.text()
    assert 'pip install "vjapp[ndi]"' in win.ndi_check.toolTip()
