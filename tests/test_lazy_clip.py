"""A render without a text prompt never builds CLIP: the bundle's CLIP is a LazyClip that knows its
embedding width, its image tower's hash (the atlas key) and the class prompts' text embeddings (a
cache beside the bundle) from disk, and builds the real model on first real use. Nothing rendered
changes."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch

from model.atlas import AtlasSettings, atlas_key
from model.bundle import load_bundle
from model.clip import class_text_embeddings
from model.formats import CheckpointError
from model.lazy_clip import LazyClip, anchors_key, class_anchors

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bundle_dir(tiny_bundle_dir, tmp_path) -> Path:
    """A private copy of the tiny bundle (its caches are this test's own)."""
    return Path(shutil.copytree(tiny_bundle_dir, tmp_path / "bundle", ignore=shutil.ignore_patterns("cache")))


def test_lazy_clip_knows_its_width_and_hashes_without_building(bundle_dir) -> None:
    eager = load_bundle(bundle_dir, parts=["generator", "clip"])
    lazy = load_bundle(bundle_dir, parts=["generator", "clip"], lazy_clip=True)
    assert isinstance(lazy.clip, LazyClip)
    assert lazy.clip.embed_dim == eager.clip.embed_dim
    settings = AtlasSettings(samples=8)
    # the image tower's tensors from the file hash as the built tower does: the same atlas key
    assert atlas_key(lazy.generator, lazy.clip, settings) == atlas_key(eager.generator, eager.clip, settings)
    assert anchors_key(lazy.clip, lazy.info.labels) == anchors_key(eager.clip, eager.info.labels)
    assert not lazy.clip.built
    # a different CLIP has a different key
    with torch.no_grad():
        next(eager.clip.model.visual.parameters()).add_(1e-3)
    assert atlas_key(lazy.generator, lazy.clip, settings) != atlas_key(eager.generator, eager.clip, settings)


def test_lazy_clip_builds_on_first_use_with_its_device_and_mode(bundle_dir) -> None:
    eager = load_bundle(bundle_dir, parts=["clip"]).clip
    lazy = load_bundle(bundle_dir, parts=["clip"], lazy_clip=True).clip
    encode = lazy.to("cpu").train().encode_text  # a bound method does not build
    assert not lazy.built and lazy.training
    got = encode(["a waterfall", "fire crackling"])
    assert lazy.built and lazy.training and lazy.build().training
    lazy.eval()
    assert not lazy.build().training
    assert torch.equal(got, eager.encode_text(["a waterfall", "fire crackling"]))
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.equal(lazy.encode_image(images), eager.encode_image(images))
    # anything else of the model is the built model's
    assert lazy.logit_scale is lazy.build().model.logit_scale
    assert sum(p.numel() for p in lazy.parameters()) == sum(p.numel() for p in eager.parameters())
    # once built, the hashes come from the model and stay the same
    assert anchors_key(lazy, ["wind"]) == anchors_key(eager, ["wind"])


def test_a_corrupt_clip_file_is_one_clear_error_at_load(bundle_dir) -> None:
    weights = bundle_dir / "clip.safetensors"
    whole = weights.read_bytes()
    weights.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CheckpointError, match="clip"):
        load_bundle(bundle_dir, lazy_clip=True)
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(CheckpointError, match="clip"):
        load_bundle(bundle_dir, lazy_clip=True)


def test_non_finite_clip_weights_are_one_clear_error_when_hashed(bundle_dir) -> None:
    from safetensors.torch import load_file, save_file

    weights = bundle_dir / "clip.safetensors"
    state = load_file(str(weights))
    name = next(k for k in state if k.startswith("model.visual.") and state[k].is_floating_point())
    state[name][..., 0] = float("nan")
    save_file(state, str(weights))
    lazy = load_bundle(bundle_dir, parts=["generator", "clip"], lazy_clip=True)  # the header is fine
    with pytest.raises(CheckpointError, match="NaN"):
        atlas_key(lazy.generator, lazy.clip, AtlasSettings(samples=8))


def test_class_anchors_are_cached_and_read_back_without_building(bundle_dir) -> None:
    labels = ("wind", "volcano", "raining")
    eager = load_bundle(bundle_dir, parts=["clip"]).clip
    want = class_text_embeddings(eager, labels)
    first = load_bundle(bundle_dir, parts=["clip"], lazy_clip=True).clip
    got = class_anchors(first, labels, bundle_dir)  # not cached yet: builds CLIP, writes the cache
    assert first.built and torch.equal(got, want)
    cached = list((bundle_dir / "cache").glob("anchors-*.safetensors"))
    assert [p.name for p in cached] == [f"anchors-{anchors_key(eager, labels)}.safetensors"]
    second = load_bundle(bundle_dir, parts=["clip"], lazy_clip=True).clip
    assert torch.equal(class_anchors(second, labels, bundle_dir), want)
    assert not second.built
    # other labels are another cache entry
    class_anchors(second, labels[:2], bundle_dir)
    assert second.built and len(list((bundle_dir / "cache").glob("anchors-*.safetensors"))) == 2


@pytest.mark.parametrize("damage", ["garbage", "wrong shape"])
def test_a_broken_anchors_cache_builds_clip_instead(bundle_dir, caplog, damage) -> None:
    labels = ("wind", "volcano")
    eager = load_bundle(bundle_dir, parts=["clip"]).clip
    want = class_text_embeddings(eager, labels)
    path = bundle_dir / "cache" / f"anchors-{anchors_key(eager, labels)}.safetensors"
    path.parent.mkdir()
    if damage == "garbage":
        path.write_bytes(b"not a safetensors file")
    else:
        from safetensors.torch import save_file

        save_file({"anchors": torch.zeros(3, 5)}, str(path))
    lazy = load_bundle(bundle_dir, parts=["clip"], lazy_clip=True).clip
    with caplog.at_level(logging.WARNING):
        got = class_anchors(lazy, labels, bundle_dir)
    assert lazy.built and torch.equal(got, want)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING and path.name in r.getMessage()]
    # rewritten: the next load reads it
    again = load_bundle(bundle_dir, parts=["clip"], lazy_clip=True).clip
    assert torch.equal(class_anchors(again, labels, bundle_dir), want) and not again.built


# ------------------------------------------------------------------------------------------------
# The embedded default, rendered as `vjapp render` does


@pytest.fixture(scope="module")
def song(tmp_path_factory) -> Path:
    """2 s of synthetic sound: a swelling tone under noise bursts every quarter second."""
    sr = 44100
    t = np.arange(2 * sr) / sr
    rng = np.random.default_rng(7)
    x = 0.4 * np.sin(2 * np.pi * 110 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    x += 0.3 * rng.standard_normal(t.size) * ((t % 0.25) < 0.06)
    path = tmp_path_factory.mktemp("song") / "song.wav"
    sf.write(path, np.stack([x, x], axis=1).astype(np.float32), sr)
    return path


def _decoded(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _render(song: Path, out: Path, monkeypatch, lazy: bool, prompt: str = "") -> tuple[np.ndarray, object]:
    """Render ``song`` with the default bundle; (frames, bundle). ``lazy``: as `vjapp render` does now,
    else as before LazyClip: CLIP loaded and the class anchors computed by it."""
    import vjapp.bundles as bundles
    from vjapp.engine.controls import Controls
    from vjapp.render import render_file

    real = bundles.open_bundle
    opened = []

    def open_bundle(*args, lazy_clip: bool = False, **kwargs):
        bundle, where = real(*args, lazy_clip=lazy_clip and lazy, **kwargs)
        opened.append(bundle)
        return bundle, where

    monkeypatch.setattr(bundles, "open_bundle", open_bundle)
    if not lazy:  # as before the anchors cache: the class prompts' embeddings computed by CLIP
        import model.atlas_classes as atlas_classes  # where the show's scene steering takes them

        monkeypatch.setattr(atlas_classes, "class_anchors", lambda clip, labels, root: class_text_embeddings(clip, labels))
    render_file(song, out, Controls().replace(prompt=prompt), device="cpu", progress=False)
    return _decoded(out), opened[0]


def test_a_render_with_the_lazy_clip_is_the_render_with_clip(song, tmp_path, monkeypatch) -> None:
    frames, bundle = _render(song, tmp_path / "lazy.mp4", monkeypatch, lazy=True)
    assert isinstance(bundle.clip, LazyClip) and not bundle.clip.built  # atlas and anchors from disk
    reference, eager = _render(song, tmp_path / "eager.mp4", monkeypatch, lazy=False)
    assert not isinstance(eager.clip, LazyClip)
    assert frames.shape == reference.shape == (60, 256, 256, 3)
    assert np.array_equal(frames, reference)
    assert frames.std(axis=0).mean() > 1.0  # the picture moves: the comparison means something


def test_a_render_with_a_prompt_still_uses_clip(song, tmp_path, monkeypatch) -> None:
    frames, bundle = _render(song, tmp_path / "prompt.mp4", monkeypatch, lazy=True, prompt="a volcano at night")
    plain, _ = _render(song, tmp_path / "plain.mp4", monkeypatch, lazy=True)
    assert not isinstance(bundle.clip, LazyClip)  # a text prompt needs CLIP: loaded as before
    assert frames.shape == plain.shape and not np.array_equal(frames, plain)


def test_a_prompt_builds_the_lazy_clip_on_demand() -> None:
    from vjapp.bundles import DEFAULT_BUNDLE_DIR
    from vjapp.engine.controls import Controls
    from vjapp.engine.show import Show

    controls = Controls().replace(prompt="a volcano at night")
    latents = {}
    for lazy in (True, False):
        bundle = load_bundle(DEFAULT_BUNDLE_DIR, lazy_clip=lazy)
        show = Show(bundle, torch.device("cpu"), torch.float32)
        assert show.atlas is not None and show.sound.scene_layer is not None
        if lazy:
            assert not bundle.clip.built
        show.resolve_prompts(controls)
        latents[lazy] = show.search.cached(controls.prompt).latent
        if lazy:
            assert bundle.clip.built
    assert torch.equal(latents[True], latents[False])


def test_a_render_without_a_prompt_never_imports_open_clip(song, tmp_path) -> None:
    """In a fresh process, as a user runs it: OpenCLIP and torchvision are not even imported."""
    out = tmp_path / "out.mp4"
    script = (
        "import json, sys\n"
        "from vjapp.cli import main\n"
        f"rc = main(['render', {str(song)!r}, '-o', {str(out)!r}, '--quiet', '--threads', '1', '--size', '64'])\n"
        "print(json.dumps({'rc': rc, 'loaded': sorted(m for m in ('open_clip', 'torchvision') if m in sys.modules)}))\n"
    )
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"rc": 0, "loaded": []}
    assert out.is_file()
