"""The latent atlas: deterministic, cached beside the bundle, rebuilt when the generator changes;
steering picks what the query means; the live pipeline follows the sound's scene."""

from __future__ import annotations

import math

import pytest
import torch

from model.atlas import AtlasSettings, AtlasSteering, LatentAtlas, SteeringSettings, atlas_for, build_atlas
from model.bundle import load_bundle

SMALL = AtlasSettings(samples=48, batch=16)


@pytest.fixture()
def bundle(tiny_bundle_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    return load_bundle(tiny_bundle_dir)


def test_the_atlas_is_deterministic_and_embedded_by_the_bundles_clip(bundle):
    a = build_atlas(bundle.generator, bundle.clip, SMALL)
    b = build_atlas(bundle.generator, bundle.clip, SMALL)
    assert a.w.shape == (48, bundle.w_dim) and a.embeddings.shape == (48, bundle.info.embed_dim)
    torch.testing.assert_close(a.w, b.w)
    torch.testing.assert_close(a.embeddings, b.embeddings)
    torch.testing.assert_close(a.embeddings.norm(dim=-1), torch.ones(48))
    # entry 5's embedding is CLIP's view of entry 5's picture, drawn at the atlas' truncation
    G = bundle.generator
    w = G.mapping.w_avg + SMALL.truncation_psi * (a.w[5] - G.mapping.w_avg)
    img = G.synthesis(w.expand(1, G.num_ws, -1).contiguous(), noise_mode="const").clamp(-1, 1)  # as shown
    img = torch.nn.functional.interpolate(img, size=(64, 64), mode="bilinear", align_corners=False,
                                          antialias=img.shape[-1] > 64)
    torch.testing.assert_close(bundle.clip.encode_image(img)[0], a.embeddings[5], atol=1e-4, rtol=0)


def test_the_atlas_is_cached_beside_the_bundle_and_rebuilt_when_the_generator_changes(bundle, monkeypatch):
    progress = []
    first = atlas_for(bundle.generator, bundle.clip, bundle.root, SMALL, progress=lambda d, n: progress.append((d, n)))
    assert progress[-1] == (48, 48) and len(progress) == 3
    files = list((bundle.root / "cache").glob("atlas-*.safetensors"))
    assert [p.name for p in files] == [f"atlas-{first.key}.safetensors"]

    import model.atlas as atlas_mod

    def no_build(*a, **k):
        raise AssertionError("rebuilt although cached")

    monkeypatch.setattr(atlas_mod, "build_atlas", no_build)
    again = atlas_for(bundle.generator, bundle.clip, bundle.root, SMALL)
    torch.testing.assert_close(again.w, first.w)
    torch.testing.assert_close(again.embeddings, first.embeddings)
    monkeypatch.undo()

    with torch.no_grad():  # another generator (its synthesis changed, mapping untouched): another atlas
        bundle.generator.synthesis.b4.conv1.weight.mul_(1.5)
    changed = atlas_for(bundle.generator, bundle.clip, bundle.root, SMALL)
    assert changed.key != first.key
    assert not torch.allclose(changed.embeddings, first.embeddings)
    assert len(list((bundle.root / "cache").glob("atlas-*.safetensors"))) == 2
    # a corrupt cache file is rebuilt, not fatal
    path = bundle.root / "cache" / f"atlas-{changed.key}.safetensors"
    path.write_bytes(b"not a safetensors file")
    rebuilt = atlas_for(bundle.generator, bundle.clip, bundle.root, SMALL)
    torch.testing.assert_close(rebuilt.w, changed.w)


def test_steering_picks_the_entries_nearest_in_meaning_and_blends_them_in_w():
    gen = torch.Generator().manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(20, 8, generator=gen), dim=-1)
    w = torch.randn(20, 6, generator=gen)
    atlas = LatentAtlas(w, emb, 0.7, "k")
    sharp = AtlasSteering(atlas, SteeringSettings(top_k=1))
    torch.testing.assert_close(sharp.target(emb[7]), w[7:8])
    blend = AtlasSteering(atlas, SteeringSettings(top_k=4, temperature=10.0))  # nearly even weights
    idx, wts = blend.weights(emb[3:5])
    assert idx.shape == (2, 4) and int(idx[0, 0]) == 3 and int(idx[1, 0]) == 4
    torch.testing.assert_close(wts.sum(1), torch.ones(2))
    target = blend.target(emb[3])
    torch.testing.assert_close(target[0], (w[idx[0]] * wts[0, :, None]).sum(0))
    # locality: among equally good entries, the one near the base latent wins
    twin = LatentAtlas(torch.stack([torch.zeros(6), torch.full((6,), 5.0)]), emb[:1].repeat(2, 1), 0.7, "t")
    near = AtlasSteering(twin, SteeringSettings(top_k=1, locality=1.0))
    torch.testing.assert_close(near.target(emb[0], base_w=torch.full((6,), 4.0)), torch.full((1, 6), 5.0))
    torch.testing.assert_close(near.target(emb[0], base_w=torch.zeros(6)), torch.zeros(1, 6))


def test_an_atlas_alone_plays_the_sound_scene_without_audio_models(bundle):
    """A generator without E_a/predictor of its shape: the scene layer moves it with the sound,
    louder moves it further, silence leaves the base picture."""
    from model.audio_features import LogMel
    from vjapp.engine.controls import Controls
    from vjapp.engine.pipeline import SceneLayer, SoundToLatent
    from vjapp.engine.scene import SceneDynamics

    atlas = atlas_for(bundle.generator, bundle.clip, bundle.root, SMALL)
    G = bundle.generator
    scene = SceneLayer(bundle.audio_encoder, AtlasSteering(atlas), SceneDynamics(), bundle.info.segment_seconds)
    s2l = SoundToLatent(LogMel(bundle.info.mel), None, None, G.mapping.w_avg, bundle.info.layer_groups,
                        torch.device("cpu"), scene=scene, num_ws=G.num_ws)
    sr = s2l.sample_rate
    base = G.mapping(torch.randn(1, G.z_dim, generator=torch.Generator().manual_seed(3)))[0]
    t = torch.arange(s2l.window_samples) / sr
    tone = 0.3 * torch.sin(2 * math.pi * 440 * t) * torch.sin(2 * math.pi * 3 * t)
    controls = Controls().replace(truncation_psi=1.0)

    def shown_after(x: torch.Tensor, steps: int = 12) -> torch.Tensor:
        s2l.reset()
        for _ in range(steps):
            ws = s2l.step([x], base, controls).ws
        return ws

    with torch.no_grad():
        silent = shown_after(torch.zeros_like(tone))
        torch.testing.assert_close(silent, base)
        shown = shown_after(tone)
        # the scene is the atlas' blend for what F_a hears; loud, the picture is (nearly) there
        target = scene.steering.target(s2l.hear([tone], (1.0, 0.0)).embedding, base[:1])[0]
        assert float((shown - target).norm(dim=-1).max()) < 0.05 * float((base - target).norm(dim=-1).min())
        # about -36 dBFS RMS vs -56 dBFS: a quiet room moves the picture far less (here: not at all,
        # it is under the scene's floor) than a sound of the scene
        moderate = (shown_after(tone * 0.1) - base).norm(dim=-1).mean()
        quiet = (shown_after(tone * 0.01) - base).norm(dim=-1).mean()
    assert float(moderate) > 0.0 and float(quiet) < 0.3 * float(moderate)
    s2l.reset()
    for _ in range(12):
        ws = s2l.step([tone], base, controls.replace(scene=0.0)).ws
    torch.testing.assert_close(ws, base)  # the scene control at 0: the base picture
