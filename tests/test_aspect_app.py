"""The aspect control through the app: controls, presets, OSC, the engine's frames, the output
window, the recorder, ``vjapp render``, ``vjapp bench`` and the CLI options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from vjapp.cli import main
from vjapp.engine.controls import ASPECTS, ControlError, Controls, aspect_ratio, frame_shape, set_path
from vjapp.output.mp4 import probe_mp4


@pytest.fixture(scope="module")
def wav(tmp_path_factory) -> Path:
    """1 s of a chord at 16 kHz mono."""
    sr = 16000
    t = np.arange(sr) / sr
    path = tmp_path_factory.mktemp("audio") / "in.wav"
    sf.write(path, (0.4 * np.sin(2 * np.pi * 220 * t) * (t > 0.3)).astype(np.float32), sr)
    return path


# ------------------------------------------------------------------------------------ controls


def test_frame_shape_short_side_and_even_long_side() -> None:
    assert frame_shape(256, "1:1") == (256, 256)
    assert frame_shape(256, "16:9") == (256, 456)
    assert frame_shape(256, "4:3") == (256, 342)
    assert frame_shape(256, "9:16") == (456, 256)
    assert frame_shape(1024, "16:9") == (1024, 1820)
    for a in ASPECTS:
        h, w = frame_shape(64, a)
        assert h % 2 == 0 and w % 2 == 0 and min(h, w) == 64
        assert abs(w / h - aspect_ratio(a)) < 0.02


def test_aspect_control_validates_and_presets_carry_it() -> None:
    from vjapp.presets import Preset

    assert Controls().aspect == "1:1"
    assert set_path(Controls(), "aspect", " 16:9 ").aspect == "16:9"
    for bad in ("2:1", "16/9", "", 1.7):
        with pytest.raises(ControlError, match="aspect"):
            set_path(Controls(), "aspect", bad)
    with pytest.raises(ControlError, match=r"aspect: '21:9' is not one of 1:1, 16:9, 4:3, 9:16"):
        Controls(aspect="21:9")
    preset = Preset(name="wide", controls={"aspect": "9:16", "gain": 2.0})
    assert preset.apply(Controls()).aspect == "9:16"
    assert Controls.from_dict(Controls(aspect="4:3").to_dict()).aspect == "4:3"  # a saved preset keeps it


def test_osc_address_comes_from_the_control_specs() -> None:
    from vjapp.osc import ADDRESS_TABLE, address_table_markdown

    rows = {row.address: row for row in ADDRESS_TABLE}
    assert "/vjapp/aspect" in rows
    assert "`/vjapp/aspect`" in address_table_markdown()
    assert "16:9" in address_table_markdown()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "| `/vjapp/aspect` |" in readme


# ------------------------------------------------------------------------------------ the show


def _step(show) -> None:
    """One model step on silence, so the show has a keyframe to draw."""
    show.model_step(0.0, [torch.zeros(show.sound.window_samples)])


def test_show_frames_take_the_aspect(show) -> None:
    _step(show)
    assert show.frame_at(0.0).shape == (32, 32, 3)
    for aspect in ASPECTS:
        show.apply(Controls(aspect=aspect), 0.0, immediate=True)
        assert show.frame_at(0.0).shape == frame_shape(32, aspect) + (3,), aspect
    show.apply(Controls(aspect="16:9", size=64), 0.0, immediate=True)  # size is the short side
    assert show.frame_at(0.0).shape == (64, 114, 3)
    # prompt search judges square frames whatever the output's shape
    ws = show.ws_at([0.0])
    assert show.renderer.images(ws, aspect="1:1").shape[-2:] == (64, 64)


def test_native_wide_frames_are_synthesized_not_stretched(show) -> None:
    """At the generator's size the 16:9 frame is the generator's widened synthesis itself."""
    show.apply(Controls(aspect="16:9"), 0.0, immediate=True)
    _step(show)
    ws = show.ws_at([0.0])
    img = show.renderer.images(ws)
    ref = show.renderer.fast.synthesis(ws, aspect=16 / 9)
    assert img.shape == (1, 3, 32, 56) and torch.equal(img, ref)


# ------------------------------------------------------------------------------------ output window


def test_wide_frames_fill_a_wide_screen_with_no_bars() -> None:
    from vjapp.ui.output_window import target_rect

    h, w = frame_shape(256, "16:9")
    assert target_rect(w, h, 1920, 1080, "fit") == (0, 0, 1920, 1080)
    h, w = frame_shape(128, "16:9")
    assert target_rect(w, h, 3840, 2160, "fit") == (0, 0, 3840, 2160)
    x, y, sw, sh = target_rect(256, 256, 1920, 1080, "fit")  # a square frame is pillarboxed
    assert (sw, sh) == (1080, 1080) and x == 420
    x, y, sw, sh = target_rect(*frame_shape(256, "9:16")[::-1], 1920, 1080, "fit")
    assert sh == 1080 and sw < 700


def test_output_window_takes_the_shape_of_the_frames(qtbot) -> None:
    from vjapp.ui.output_window import OutputWindow

    win = OutputWindow()
    qtbot.addWidget(win)
    win.resize(400, 400)
    win.show()
    win.set_frame(np.zeros((64, 64, 3), np.uint8))
    assert (win.width(), win.height()) == (400, 400)
    win.set_frame(np.zeros(frame_shape(64, "16:9") + (3,), np.uint8))
    qtbot.waitUntil(lambda: win.width() != 400, timeout=2000)
    assert win.height() == 400 and abs(win.width() / win.height() - 114 / 64) < 0.01


# ------------------------------------------------------------------------------------ CLI


def test_render_at_16_9_writes_a_16_9_mp4(wav, tiny_bundle_dir, tmp_path) -> None:
    import av

    out = tmp_path / "wide.mp4"
    assert main(["render", str(wav), "-o", str(out), "--bundle", str(tiny_bundle_dir), "--fps", "10",
                 "--size", "64", "--aspect", "16:9", "--quiet", "--dtype", "fp32"]) == 0
    video = probe_mp4(out)["video"]
    assert (video["width"], video["height"]) == (114, 64)
    with av.open(str(out)) as c:
        shapes = {f.to_ndarray(format="rgb24").shape for f in c.decode(video=0)}
    assert shapes == {(64, 114, 3)}


def test_render_at_9_16_native_size(wav, tiny_bundle_dir, tmp_path) -> None:
    out = tmp_path / "tall.mp4"
    assert main(["render", str(wav), "-o", str(out), "--bundle", str(tiny_bundle_dir), "--fps", "10",
                 "--aspect", "9:16", "--quiet", "--dtype", "fp32"]) == 0
    video = probe_mp4(out)["video"]
    assert (video["width"], video["height"]) == (32, 56)


@pytest.mark.parametrize("command", [["render", "in.wav", "-o", "out.mp4"], ["bench"], ["gui"]])
def test_bad_aspect_option_is_one_clear_error(command, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(command + ["--aspect", "21:9"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--aspect must be one of 1:1, 16:9, 4:3, 9:16 (width:height), got '21:9'" in err


def test_bench_at_an_aspect_reports_the_frame_shape(tiny_bundle_dir, capsys) -> None:
    rc = main(["bench", "--bundle", str(tiny_bundle_dir), "--frames", "4", "--warmup", "1", "--json",
               "--dtype", "fp32", "--latency-bursts", "0", "--aspect", "4:3"])
    assert rc == 0
    r = json.loads(capsys.readouterr().out)
    assert r["output_shape"] == [32, 42]


# ------------------------------------------------------------------------------------ the app


def _shape(ctx) -> tuple[int, ...] | None:
    img = ctx.output.newest_image()
    return None if img is None else img.shape


def _decoded_sizes(path: Path) -> set[tuple[int, int]]:
    import av

    with av.open(str(path)) as c:
        return {(f.height, f.width) for f in c.decode(video=0)}


def test_app_switches_aspect_over_osc_and_controls_and_a_take_keeps_its_size(make_app, qtbot) -> None:
    from pythonosc.udp_client import SimpleUDPClient

    ctx = make_app()
    qtbot.waitUntil(lambda: _shape(ctx) == (32, 32, 3), timeout=30000)
    client = SimpleUDPClient("127.0.0.1", ctx.osc.port)
    client.send_message("/vjapp/aspect", "16:9")
    qtbot.waitUntil(lambda: _shape(ctx) == (32, 56, 3), timeout=10000)
    combo = ctx.window.findChild(type(ctx.window.scale_combo), "combo:aspect")
    qtbot.waitUntil(lambda: combo.currentText() == "16:9", timeout=3000)  # the widget follows
    qtbot.waitUntil(lambda: abs(ctx.output.width() / ctx.output.height() - 56 / 32) < 0.02, timeout=3000)

    bad_before = ctx.osc.stats()["bad_args"]
    client.send_message("/vjapp/aspect", "21:9")  # refused; the show keeps its shape
    qtbot.waitUntil(lambda: ctx.osc.stats()["bad_args"] == bad_before + 1, timeout=3000)
    assert ctx.controls.get()[1].aspect == "16:9"

    ctx.set_recording(True)  # a take at 16:9 ...
    qtbot.wait(700)
    combo.setCurrentText("9:16")  # ... through the control window's combo, mid-take
    qtbot.waitUntil(lambda: _shape(ctx) == (56, 32, 3), timeout=10000)
    qtbot.wait(700)
    ctx.set_recording(False)
    status = ctx.recorder_status()
    assert status.error is None and status.size == (56, 32) and status.frames_resized > 0
    assert _decoded_sizes(status.path) == {(32, 56)}  # ... keeps its size: the tall frames are fitted in
    assert any("at 56x32" in t for _, t in ctx.window.messages)

    ctx.set_control("aspect", "nope")
    qtbot.waitUntil(lambda: any("aspect" in t and "not one of" in t for _, t in ctx.window.messages), timeout=3000)
    assert ctx.controls.get()[1].aspect == "9:16"


def test_app_starts_at_the_aspect_given(make_app, qtbot) -> None:
    ctx = make_app(aspect="4:3")
    qtbot.waitUntil(lambda: _shape(ctx) == (32, 42, 3), timeout=30000)
    assert abs(ctx.output.width() / ctx.output.height() - 4 / 3) < 0.02
