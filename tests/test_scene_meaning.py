"""The held meaning of the atlas scene: a steady groove keeps one scene (so the beat stands out),
a real change of sound is followed within a few steps, silence holds; the eval's batched rollout
is exactly what the live pipeline plays; the shipped default hits the beat on a kick loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.atlas import AtlasSettings, AtlasSteering, atlas_for
from model.audio_features import LogMel
from model.bundle import load_bundle
from vjapp.engine.scene import MeaningTracker, SceneDynamics

K, D = 4, 16


def _anchors() -> torch.Tensor:
    return F.normalize(torch.randn(K, D, generator=torch.Generator().manual_seed(1)), dim=-1)


def _near(anchors: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """A query close to class ``k``'s prompt (and nearest to it)."""
    noise = torch.randn(D, generator=torch.Generator().manual_seed(seed))
    return F.normalize(anchors[k] + 0.1 * noise, dim=-1)[None]


def test_a_groove_flickering_between_two_meanings_holds_one_and_a_real_change_is_taken_in_three_steps():
    anchors = _anchors()
    tracker = MeaningTracker(SceneDynamics(), anchors)
    pattern = [0, 0, 0, 1, 1] * 6  # half-second windows of a kick loop: two meanings with the beat
    held = [int(tracker.step(_near(anchors, k, i))[1]) for i, k in enumerate(pattern)]
    assert held == [0] * len(pattern)
    switches = []
    for i in range(6):  # the sound really changes to class 2
        _, h, s = tracker.step(_near(anchors, 2, 100 + i))
        switches.append((int(h), bool(s)))
    first = next(i for i, (h, _) in enumerate(switches) if h == 2)
    assert first <= 2 and switches[first][1]  # taken on the third step at the latest, flagged as a switch
    assert all(h == 2 and not s for h, s in switches[first + 1:])  # ... and held, flagged once


def test_within_a_held_class_the_query_settles_slowly_and_silence_holds_it():
    anchors = _anchors()
    d = SceneDynamics()
    tracker = MeaningTracker(d, anchors)
    a, b = _near(anchors, 0, 1), _near(anchors, 0, 2)
    q0, _, _ = tracker.step(a)
    q1, h1, _ = tracker.step(b)
    assert int(h1) == 0
    torch.testing.assert_close(q1, F.normalize(a + d.settle * (b - a), dim=-1))
    q2, h2, s2 = tracker.step(_near(anchors, 3, 5), heard=torch.tensor([False]))  # silence: nothing moves
    torch.testing.assert_close(q2, q1)
    assert int(h2) == 0 and not bool(s2)
    # without class prompts the query passes through as it is
    free = MeaningTracker(d, None)
    q, held, switched = free.step(b * 3.0)
    torch.testing.assert_close(q, b)
    assert held is None and not bool(switched.any())


def test_the_eval_rollout_is_exactly_what_the_live_scene_plays(tiny_bundle_dir, tmp_path, monkeypatch):
    """The eval's "ours" (training.baselines.atlas_latents) equals SoundToLatent step by step, with
    the held meaning, through a change of sound and a silent stretch."""
    from training.baselines import AtlasModels, LiveDynamics, atlas_latents, live_windows, random_bases
    from vjapp.engine.controls import Controls
    from vjapp.engine.pipeline import PipelineConfig, SceneLayer, SoundToLatent

    import shutil

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    bundle = load_bundle(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle"))  # its atlas cache stays ours
    G = bundle.generator
    atlas = atlas_for(G, bundle.clip, bundle.root, AtlasSettings(samples=48, batch=16))
    anchors = F.normalize(torch.randn(5, atlas.embeddings.shape[1], generator=torch.Generator().manual_seed(2)), dim=-1)
    mel, sr = bundle.info.mel, bundle.info.mel.sample_rate
    seg = int(bundle.info.segment_seconds * sr)
    t = torch.arange(seg) / sr
    gen = torch.Generator().manual_seed(0)
    tone = 0.3 * torch.sin(2 * torch.pi * 330 * t)
    noise = 0.3 * torch.randn(seg, generator=gen)
    audio = torch.stack([
        torch.stack([tone, tone, noise, noise, torch.zeros(seg), noise]),
        torch.stack([noise, 0.02 * noise, tone, tone, tone, 0.1 * tone]),
    ])  # [2, 6, S]
    base = random_bases(G.mapping, [3, 4], G.z_dim)
    pipeline = PipelineConfig(window_seconds=bundle.info.segment_seconds)
    dyn, scene = LiveDynamics.live(pipeline), SceneDynamics()
    models = AtlasModels(LogMel(mel), bundle.audio_encoder.eval(), AtlasSteering(atlas, anchors=anchors), 5, dyn, scene)
    with torch.no_grad():
        ws_all, _ = atlas_latents(models, audio, base)
    windows, _ = live_windows(audio, 5)
    controls = Controls()
    moved = []
    for i in range(2):
        layer = SceneLayer(bundle.audio_encoder.eval(), AtlasSteering(atlas, anchors=anchors), scene,
                           bundle.info.segment_seconds)
        live = SoundToLatent(LogMel(mel), None, None, G.mapping.w_avg, bundle.info.layer_groups,
                             torch.device("cpu"), pipeline, scene=layer, num_ws=G.num_ws)
        for j in range(windows.shape[1]):
            got = live.step([windows[i, j]], base[i], controls).ws
            want = ws_all[i, j]
            want = G.mapping.w_avg + controls.truncation_psi * (want - G.mapping.w_avg)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
        moved.append(float((ws_all[i, -1] - base[i]).norm()))
    assert min(moved) > 0.0


def test_the_shipped_default_hits_the_beat_on_a_kick_loop():
    """What a VJ checks first: with the default bundle (atlas scene on), the picture changes far
    more just after each kick than between kicks (a steady loop keeps its scene)."""
    from vjapp.bench_rhythm import _after_kick_ratio, _make_show, _render_loop, frame_change
    from vjapp.audio.loops import make_loop
    from vjapp.engine.controls import Controls

    show, _ = _make_show(None, "cpu", "fp32")
    assert show.sound.scene_layer is not None  # the default plays the atlas scene
    loop = make_loop(120, 8, 44_100, kicks=True, seed=11)
    controls = Controls().replace(fps=30.0, model_rate=show.bundle.info.model_rate)
    frames, _ = _render_loop(show, loop.samples, 44_100, 30.0, controls)
    after, between = _after_kick_ratio(frame_change(frames), 30.0, loop.kicks, skip_s=2.0)
    assert after > 3.0 * between, (after, between)
    assert np.isfinite(after)


@pytest.mark.parametrize("bad", [dict(class_smoothing=0.0), dict(hysteresis=-0.1), dict(switch_glide=1.5),
                                 dict(settle=2.0), dict(class_temperature=0.0)])
def test_bad_scene_dynamics_are_refused(bad):
    with pytest.raises(ValueError):
        SceneDynamics(**bad)
