"""The atlas entries' classes, named by classifiers trained on real frames: what each entry draws,
stored beside the atlas for exactly that atlas, used by the scene's steering instead of CLIP's
class prompts, and never named by the eval's own judge."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from judge_fixtures import untrained_judges

from model.atlas import AtlasSettings, AtlasSteering, LatentAtlas, SteeringSettings, atlas_for
from model.atlas_classes import atlas_classes, classes_name, classify_atlas, read_atlas_classes, save_atlas_classes
from model.bundle import load_bundle
from training.cli import main as train_main

SMALL = AtlasSettings(samples=24, batch=8)


@pytest.fixture()
def bundle(tiny_bundle_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user-cache"))
    import shutil

    root = tmp_path / "bundle"
    shutil.copytree(tiny_bundle_dir, root)
    return load_bundle(root)


def test_each_entry_is_classed_by_the_classifiers_on_its_own_picture(bundle):
    G, labels = bundle.generator, bundle.info.labels
    atlas = atlas_for(G, bundle.clip, bundle.root, SMALL)
    judges = untrained_judges(labels)
    probs = classify_atlas(G, atlas, judges, batch=5)
    assert probs.shape == (24, len(labels))
    torch.testing.assert_close(probs.sum(1), torch.ones(24))
    # entry 13: its picture drawn as the atlas drew it (its truncation, const noise), both classifiers' logits
    w = G.mapping.w_avg + atlas.truncation_psi * (atlas.w[13] - G.mapping.w_avg)
    with torch.no_grad():
        img = G.synthesis(w.expand(1, G.num_ws, -1).contiguous(), noise_mode="const").clamp(-1, 1)
        want = torch.softmax(judges[0](img) + judges[1](img), dim=1)[0]
    torch.testing.assert_close(probs[13], want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="classifier"):
        classify_atlas(G, atlas, [])


def test_classes_are_stored_for_that_atlas_and_those_labels_only(bundle, caplog):
    G, labels = bundle.generator, list(bundle.info.labels)
    atlas = atlas_for(G, bundle.clip, bundle.root, SMALL)
    probs = torch.softmax(torch.randn(24, len(labels), generator=torch.Generator().manual_seed(0)), dim=1)
    assert atlas_classes(atlas, labels, bundle.root) is None  # none yet: the show falls back to the prompts
    path = save_atlas_classes(atlas, labels, probs, bundle.root, source="test classifiers", seeds=[7, 8])
    assert path == bundle.root / "cache" / classes_name(atlas, labels)
    torch.testing.assert_close(atlas_classes(atlas, labels, bundle.root), probs)
    stored = read_atlas_classes(atlas, labels, bundle.root)
    assert (stored.source, stored.seeds) == ("test classifiers", (7, 8))
    # other labels (or their order): another name, nothing found
    assert atlas_classes(atlas, labels[::-1], bundle.root) is None
    # another generator: another atlas key, so the stale classes are not read
    with torch.no_grad():
        G.synthesis.b4.conv1.weight.mul_(1.5)
    changed = atlas_for(G, bundle.clip, bundle.root, SMALL)
    assert changed.key != atlas.key and atlas_classes(changed, labels, bundle.root) is None
    # what does not fit is refused on save and ignored (with a warning) on load
    with pytest.raises(ValueError, match="expected"):
        save_atlas_classes(atlas, labels, probs[:5], bundle.root)
    with pytest.raises(ValueError, match="probabilities"):
        save_atlas_classes(atlas, labels, probs * 2, bundle.root)
    from safetensors.torch import save_file

    save_file({"probs": probs[:, :3].contiguous()}, str(path), metadata={"labels": "\n".join(labels)})
    with caplog.at_level(logging.WARNING):
        assert atlas_classes(atlas, labels, bundle.root) is None
    assert "ignoring the atlas entry classes" in caplog.text
    path.write_bytes(b"not a safetensors file")
    assert atlas_classes(atlas, labels, bundle.root) is None


def test_steering_blends_the_entries_of_the_held_class_as_the_classifiers_name_them():
    """CLIP puts the class-1 prompt nearest to entries that draw class 0 (as the default's small CLIP
    ranks its thunder skies above its rain): with the entry classes, class 1's scene blends the
    entries that draw class 1."""
    gen = torch.Generator().manual_seed(0)
    prompts = F.normalize(torch.randn(2, 8, generator=gen), dim=-1)
    # entries 0-9 draw class 0 but embed next to prompt 1; entries 10-19 draw class 1, embedded further off
    emb = F.normalize(torch.cat([prompts[1] + 0.1 * torch.randn(10, 8, generator=gen),
                                 prompts[1] + 0.6 * prompts[0] + 0.4 * torch.randn(10, 8, generator=gen)]), dim=-1)
    w = torch.cat([torch.zeros(10, 4), torch.ones(10, 4)])
    atlas = LatentAtlas(w, emb, 0.7, "k")
    truth = torch.cat([torch.tensor([[0.95, 0.05]]).repeat(10, 1), torch.tensor([[0.05, 0.95]]).repeat(10, 1)])
    settings = SteeringSettings(top_k=4)
    by_prompts = AtlasSteering(atlas, settings, anchors=prompts)
    by_classes = AtlasSteering(atlas, settings, anchors=prompts, entry_classes=truth)
    assert by_classes.classed and not by_prompts.classed
    query = prompts[1:2]
    held = torch.tensor([1])
    assert set(by_prompts.weights(query, classes=held)[0][0].tolist()) <= set(range(10))  # CLIP's pick: wrong
    assert set(by_classes.weights(query, classes=held)[0][0].tolist()) <= set(range(10, 20))
    torch.testing.assert_close(by_classes.target(query, classes=held), torch.ones(1, 4))
    with pytest.raises(ValueError, match="do not fit"):
        AtlasSteering(atlas, settings, anchors=prompts, entry_classes=truth[:, :1])


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.synthscapes import write_synthscapes

    return write_synthscapes(tmp_path_factory.mktemp("synthscapes"), clips=18, seconds=1.0, size=32, seed=5,
                             fps=4.0, sample_rate=16000, progress=False)


def test_the_stage_classes_a_bundles_atlas_with_its_own_classifiers_and_the_show_uses_them(
        bundle, frames: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from training.judge import load_judge, save_judge

    labels = list(bundle.info.labels)
    folder = tmp_path / "signal"
    args = ["atlas-classes", "--bundle", str(bundle.root), "--classifiers", str(folder), "--atlas-samples", "24",
            "--device", "cpu"]
    assert train_main(args) == 1
    assert "no full classifier there" in capsys.readouterr().err
    assert train_main([*args, "--classifier-data", str(frames), "--classifier-seed", "90001"]) == 1
    assert "own seed" in capsys.readouterr().err
    assert train_main([*args, "--classifier-data", str(frames), "--classifier-steps", "20"]) == 0
    assert load_judge(folder, "full").config.seed == 31_337
    atlas = atlas_for(bundle.generator, bundle.clip, bundle.root, AtlasSettings(samples=24))
    stored = atlas_classes(atlas, labels, bundle.root)
    assert stored is not None and stored.shape == (24, len(labels))
    want = classify_atlas(bundle.generator, atlas, [load_judge(folder, f) for f in ("full", "structure")])
    torch.testing.assert_close(stored, want, atol=1e-5, rtol=0)
    assert read_atlas_classes(atlas, labels, bundle.root).seeds == (31_337, 31_338)
    # the eval's own judge is refused as the namer
    for j in untrained_judges(labels, seed=90_001):
        save_judge(tmp_path / "eval-judge", j)
    assert train_main([*args[:3], "--classifiers", str(tmp_path / "eval-judge"), *args[5:]]) == 1
    assert "eval's judge" in capsys.readouterr().err

    # the show's scene layer steers by the stored classes
    from vjapp.engine.show import Show

    show = Show(bundle, torch.device("cpu"), torch.float32)
    assert show.attach_atlas(atlas)
    steering = show.sound.scene_layer.steering
    assert steering.classed
    torch.testing.assert_close(steering._entry_anchor, stored)


def test_the_eval_refuses_classes_named_by_its_own_judge(bundle):
    from training.stages.eval import EvalError, _atlas_entry_classes

    labels = list(bundle.info.labels)
    atlas = atlas_for(bundle.generator, bundle.clip, bundle.root, SMALL)
    assert _atlas_entry_classes(atlas, labels, bundle.root)[0] is None
    probs = torch.full((24, len(labels)), 1.0 / len(labels))
    save_atlas_classes(atlas, labels, probs, bundle.root, source="signal", seeds=[555_000, 555_001])
    got, source = _atlas_entry_classes(atlas, labels, bundle.root)
    assert got is not None and source == "signal"
    save_atlas_classes(atlas, labels, probs, bundle.root, source="the judge", seeds=[90_001, 90_002])
    with pytest.raises(EvalError, match="grade its own"):
        _atlas_entry_classes(atlas, labels, bundle.root)
