"""Any generator plays: bundles without audio models of its shape, the atlas built in a child
process and attached by the engine, prompts through the atlas, import in the app and in render."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import reference_nvidia as nv
from nvidia_pickle import dump_nvidia_pickle, snapshot

from model.atlas import AtlasSettings, AtlasSteering, atlas_for
from model.bundle import Bundle, load_bundle, read_bundle_info, save_bundle
from vjapp.engine.controls import Controls
from vjapp.engine.show import Show, ShowConfig

ROOT = Path(__file__).resolve().parents[1]
SMALL_ATLAS = 12


def big_pickle(path: Path, seed: int = 0) -> Path:
    """A 1024 px, 18-layer NVIDIA-layout StyleGAN2 at tiny channel widths (w_dim 32)."""
    G = nv.Generator(z_dim=32, c_dim=0, w_dim=32, img_resolution=1024, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=4096, channel_max=4))
    G = nv.randomize_(G, seed).eval()
    assert G.num_ws == 18
    return dump_nvidia_pickle(path, snapshot(G, D=None, G_ema=G))


def test_bundle_without_audio_models_round_trips(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    full = load_bundle(tiny_bundle_dir)
    assert "parts" not in json.loads((tiny_bundle_dir / "bundle.json").read_text())  # old bundles unchanged
    b = Bundle(full.info, full.generator, full.clip, full.audio_encoder)
    root = save_bundle(tmp_path / "noaudio", b)
    info = read_bundle_info(root)
    assert info.parts == ("generator", "clip", "audio_encoder")
    assert info.absent_parts == ("sound_inversion", "predictor")
    assert not (root / "sound_inversion.safetensors").exists()
    again = load_bundle(root, parts=("generator", "sound_inversion", "predictor"))
    assert again.generator is not None and again.sound_inversion is None and again.predictor is None
    only_g = save_bundle(tmp_path / "g", Bundle(full.info, full.generator))
    assert load_bundle(only_g).clip is None


def test_rhythm_only_without_clip_says_so(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    full = load_bundle(tiny_bundle_dir)
    root = save_bundle(tmp_path / "g", Bundle(full.info, full.generator))
    show = Show(load_bundle(root), torch.device("cpu"), torch.float32)
    assert any(m.startswith("sound meaning off: this bundle has no CLIP") for m in show.messages)
    show.apply(Controls(), 0.0, immediate=True)
    show.model_step(0.0, [])
    show.model_step(0.1, [])
    show.listen([(1.0, 0.0, 0.0)] * 4, 0.01, 1.0)  # a kick
    pulse = show.pulse()
    assert pulse is not None and pulse.abs().sum() > 0
    a = show.frame_at(0.1)
    b = show.frame_at(0.1, pulse)
    assert np.abs(a.astype(int) - b.astype(int)).mean() > 0.5  # the rhythm layer moves the picture


def test_prompt_resolves_at_once_through_the_atlas(tiny_bundle_dir: Path) -> None:
    bundle = load_bundle(tiny_bundle_dir)
    atlas = atlas_for(bundle.generator, bundle.clip, None, AtlasSettings(samples=SMALL_ATLAS, batch=6))
    show = Show(bundle, torch.device("cpu"), torch.float32, atlas=atlas)
    assert show.search is not None and show.search.uses_atlas
    hit = show.search.request("a volcano")
    assert hit is not None  # no candidates rendered: resolved now
    text = bundle.clip.encode_text(["a volcano"])
    want = AtlasSteering(atlas).target(text)[0]
    assert torch.allclose(hit.latent, want[None].expand(show.num_ws, -1), atol=1e-5)
    other = show.search.request("underwater bubbles")
    assert other is not None and not torch.allclose(other.latent, hit.latent)


def test_atlas_build_child_process_reports_progress_and_errors(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    import shutil

    root = Path(shutil.copytree(tiny_bundle_dir, tmp_path / "b"))
    out = subprocess.run([sys.executable, "-m", "vjapp.atlas_build", str(root), "--samples", "8"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split("\n")
    assert "progress 8 8" in lines and "done 8" in lines
    assert list((root / "cache").glob("atlas-*.safetensors"))
    bad = subprocess.run([sys.executable, "-m", "vjapp.atlas_build", str(tmp_path / "nope")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and bad.stdout.startswith("error: could not build the latent atlas")


def test_render_imports_a_pickle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import av
    import soundfile as sf

    from vjapp.cli import main

    pkl = big_pickle(tmp_path / "big.pkl")
    monkeypatch.setenv("VJAPP_IMPORT_DIR", str(tmp_path / "imp"))
    sr = 22050
    t = np.arange(int(2.0 * sr)) / sr
    kicks = np.exp(-((t % 0.5) * 30.0)) * np.sin(2 * np.pi * 60 * t)  # a kick every half second
    wav = tmp_path / "kick.wav"
    sf.write(wav, (0.6 * kicks + 0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    out = tmp_path / "out.mp4"
    rc = main(["render", str(wav), "-o", str(out), "--bundle", str(pkl), "--size", "64", "--fps", "10",
               "--atlas-samples", str(SMALL_ATLAS), "--quiet", "--device", "cpu", "--dtype", "fp32"])
    assert rc == 0 and out.is_file()
    info = read_bundle_info(tmp_path / "imp" / "bundles" / "big")
    assert (info.num_ws, info.w_dim, info.resolution) == (18, 32, 1024)
    assert "sound_inversion" not in info.parts and "audio_encoder" in info.parts
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)]
    assert len(frames) == 20
    diffs = [np.abs(b - a).mean() for a, b in zip(frames, frames[1:])]
    assert np.mean(diffs) > 0.5  # the imported generator moves with the sound


def _drop(widget, path: Path) -> None:
    from PyQt6.QtCore import QMimeData, QPointF, Qt, QUrl
    from PyQt6.QtGui import QDropEvent
    from PyQt6.QtWidgets import QWidget

    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(path))])
    event = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                       Qt.KeyboardModifier.NoModifier)
    QWidget.event(widget, event)  # Qt's own dispatch (C++ QWidget::event) must reach the window's dropEvent


def test_app_imports_a_dropped_pickle_and_attaches_its_atlas(make_app, qtbot, tmp_path: Path) -> None:
    pkl = big_pickle(tmp_path / "big.pkl")
    ctx = make_app(atlas_samples=SMALL_ATLAS, size=64)
    first = ctx.engine
    _drop(ctx.output, pkl)  # onto the output window
    qtbot.waitUntil(lambda: ctx.engine is not first and ctx.bundle.info.num_ws == 18, timeout=120_000)
    assert ctx.bundle.sound_inversion is None and ctx.bundle.predictor is None  # the tiny bundle's are 32 px shaped
    qtbot.waitUntil(lambda: ctx.engine.frames.stamp > 0, timeout=60_000)  # plays at once (rhythm layer)
    assert ctx.atlas_state == "building"
    qtbot.waitUntil(lambda: ctx.atlas_state == "attached", timeout=180_000)
    show = ctx.engine.show
    assert show.sound.scene_layer is not None and len(show.atlas) == SMALL_ATLAS
    assert list((ctx.bundle_path / "cache").glob("atlas-*.safetensors"))
    # scene: different sound, different CLIP query, different target picture
    s = show.sound
    w1 = s.scene_layer.steering.target(torch.randn(1, ctx.bundle.clip.embed_dim))
    w2 = s.scene_layer.steering.target(torch.randn(1, ctx.bundle.clip.embed_dim))
    assert not torch.allclose(w1, w2)


def test_app_corrupt_pickle_is_one_message_and_the_show_goes_on(make_app, qtbot, tmp_path: Path) -> None:
    bad = tmp_path / "broken.pkl"
    bad.write_bytes(b"\x80\x04not a pickle at all")
    ctx = make_app()
    first = ctx.engine
    _drop(ctx.window, bad)  # onto the control window
    qtbot.waitUntil(lambda: ctx.window.convert_label.text().startswith("conversion failed"), timeout=60_000)
    assert "broken.pkl" in ctx.window.convert_label.text()
    assert ctx.engine is first and first.running
    n = ctx.engine.frames.stamp
    qtbot.waitUntil(lambda: ctx.engine.frames.stamp > n + 2, timeout=10_000)


def test_named_openclip_weights_serve_the_atlas_and_prompts(tmp_path: Path, tiny_bundle_dir: Path) -> None:
    """--clip ARCH:PATH: real OpenCLIP weights from a local file; the playing F_a was trained for another
    CLIP, so the sound's meaning is off (with the reason) and prompts steer through this CLIP's atlas."""
    from safetensors.torch import save_file

    from model.clip import load_clip
    from model.stylegan2 import Generator, StyleGAN2Config
    from vjapp.gui import clip_spec
    from vjapp.imported import bundle_for_generator

    torch.manual_seed(123)
    theirs = load_clip("vjapp-tiny")
    weights = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.clone() for k, v in theirs.model.state_dict().items()}, str(weights))
    spec = clip_spec(f"vjapp-tiny:{weights}")
    base = load_bundle(tiny_bundle_dir)
    G = Generator(StyleGAN2Config(z_dim=16, w_dim=16, mapping_layers=1, mapping_hidden_dim=16, resolution=16,
                                  channel_base=256, channel_max=16))
    root = bundle_for_generator(G, base, tmp_path / "imp", "g.pkl", clip=spec)
    info = read_bundle_info(root)
    assert info.clip_source == {"kind": "openclip", "arch": "vjapp-tiny", "weights": str(weights.resolve())}
    assert info.parts == ("generator", "clip")  # F_a of another CLIP's space is not carried over
    bundle = load_bundle(root)
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    assert torch.allclose(bundle.clip.encode_image(images), theirs.encode_image(images), atol=1e-6)
    atlas = atlas_for(bundle.generator, bundle.clip, root, AtlasSettings(samples=SMALL_ATLAS, batch=6))
    show = Show(bundle, torch.device("cpu"), torch.float32, ShowConfig(atlas=AtlasSettings(samples=SMALL_ATLAS)))
    assert show.atlas is not None and show.atlas.key == atlas.key  # found in the cache beside the bundle
    assert show.sound.scene_layer is None
    assert any("sound meaning off" in m and "vjapp-train adapt" in m for m in show.messages)
    hit = show.search.request("a waterfall")
    assert hit is not None and hit.candidates == SMALL_ATLAS
    with pytest.raises(Exception, match="ARCH:PATH"):
        clip_spec("vjapp-tiny")


def test_sound_moves_a_generator_without_audio_models_through_the_scene(tmp_path: Path,
                                                                         tiny_bundle_dir: Path) -> None:
    full = load_bundle(tiny_bundle_dir)
    root = save_bundle(tmp_path / "imp", Bundle(full.info, full.generator, full.clip, full.audio_encoder))
    settings = AtlasSettings(samples=SMALL_ATLAS, batch=6)

    def step(window: torch.Tensor | None) -> torch.Tensor:
        show = Show(load_bundle(root), torch.device("cpu"), torch.float32, ShowConfig(atlas=settings))
        assert show.sound.inversion is None and show.sound.scene_layer is not None
        show.apply(Controls(), 0.0, immediate=True)
        for i in range(6):
            show.model_step(0.1 * i, [] if window is None else [window])
        return show.timeline.sample(0.5)

    atlas_for(full.generator, full.clip, root, settings)  # cached beside the bundle, as the child process does
    sr = full.info.mel.sample_rate
    n = int(sr * full.info.segment_seconds)
    gen = torch.Generator().manual_seed(0)
    noise = 0.5 * torch.randn(n, generator=gen)
    tone = 0.5 * torch.sin(2 * torch.pi * 330 * torch.arange(n) / sr)
    silent, a, b = step(None), step(noise), step(tone)
    assert (a - silent).norm() > 1e-3 and (b - silent).norm() > 1e-3  # loud sound moves the scene
    assert (a - b).norm() > 1e-4  # and what it sounds like decides where to


def test_vjapp_bundle_pkl_converts_builds_and_plays(make_app, qtbot, tmp_path: Path) -> None:
    G = nv.randomize_(nv.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=16, img_channels=3,
                                   mapping_kwargs=dict(num_layers=2),
                                   synthesis_kwargs=dict(channel_base=256, channel_max=16)), 5).eval()
    pkl = dump_nvidia_pickle(tmp_path / "mine.pkl", snapshot(G, D=None, G_ema=G))
    ctx = make_app(bundle=str(pkl), atlas_samples=8)
    qtbot.waitUntil(lambda: ctx.bundle_path == tmp_path / "data" / "bundles" / "mine", timeout=60_000)
    qtbot.waitUntil(lambda: ctx.atlas_state == "attached", timeout=60_000)
    assert ctx.engine.show.sound.scene_layer is not None
    n = ctx.engine.frames.stamp
    qtbot.waitUntil(lambda: ctx.engine.frames.stamp > n + 2, timeout=10_000)


def test_bench_imported_generator_at_several_sizes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from vjapp.cli import main

    pkl = big_pickle(tmp_path / "big.pkl", seed=1)
    monkeypatch.setenv("VJAPP_IMPORT_DIR", str(tmp_path / "imp"))
    rc = main(["bench", "--bundle", str(pkl), "--sizes", "64", "128", "--frames", "3", "--warmup", "1",
               "--atlas-samples", str(SMALL_ATLAS), "--latency-bursts", "0", "--dtype", "fp32", "--json"])
    out = capsys.readouterr().out
    assert rc == 0, out
    rows = json.loads(out)
    assert [r["output_size"] for r in rows] == [64, 128]
    for r in rows:
        assert (r["num_ws"], r["resolution"], r["atlas"]) == (18, 1024, SMALL_ATLAS) and r["scene_on"]
        assert {"scene", "rhythm", "synthesis"} <= set(r["stages_ms"]) and r["fps"] > 0


def test_render_corrupt_pickle_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import soundfile as sf

    from vjapp.cli import main

    monkeypatch.setenv("VJAPP_IMPORT_DIR", str(tmp_path / "imp"))
    bad = tmp_path / "broken.pkl"
    bad.write_bytes(b"\x80\x04not a pickle at all")
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(8000, dtype=np.float32), 16000)
    rc = main(["render", str(wav), "-o", str(tmp_path / "o.mp4"), "--bundle", str(bad), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "broken.pkl" in err[0] and "no file written" in err[0]
    assert not (tmp_path / "o.mp4").exists()
