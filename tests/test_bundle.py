"""Bundles: a random one is consistent and drives the whole chain; save/load is exact; bad ones fail clearly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from model.audio_features import LogMel, MelConfig
from model.bundle import (
    BUNDLE_FILE,
    PARTS,
    Bundle,
    BundleInfo,
    load_bundle,
    random_bundle,
    read_bundle_info,
    save_bundle,
)
from model.formats import CheckpointError
from model.latent_rnn import LatentRNN, LatentRNNConfig, save_latent_rnn
from model.openclip_compat import import_open_clip

try:
    import_open_clip()
except ImportError as exc:  # pragma: no cover - only without the 'clip' extra
    pytest.skip(f"OpenCLIP not installed: {exc}", allow_module_level=True)

MEL = MelConfig(sample_rate=16000, n_fft=512, hop_length=128, n_mels=32)


def _tiny_bundle(seed: int = 0) -> Bundle:
    return random_bundle(
        resolution=16, channel_max=16, seed=seed, w_dim=32, mapping_layers=2,
        mel=MEL, encoder_channels=(8, 16), hidden_dim=16, segment_seconds=0.25,
    )


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return _tiny_bundle()


@pytest.fixture(scope="module")
def saved(bundle, tmp_path_factory) -> Path:
    return save_bundle(tmp_path_factory.mktemp("bundle") / "b", bundle)


@pytest.fixture
def copy(saved, tmp_path) -> Path:
    """A private copy of the saved bundle that a test may damage."""
    return Path(shutil.copytree(saved, tmp_path / "b"))


def _outputs(b: Bundle) -> dict[str, torch.Tensor]:
    """Every part's output on fixed inputs: the sound → latent → image chain plus CLIP."""
    gen = torch.Generator().manual_seed(123)
    audio = torch.rand(1, b.info.segment_samples, generator=gen) * 2 - 1
    mel = LogMel(b.info.mel)(audio)  # [1, n_mels, frames]
    with torch.no_grad():
        z = torch.randn(1, b.generator.z_dim, generator=gen)
        w = b.generator.mapping(z)  # [1, num_ws, w_dim]
        delta = b.sound_inversion(mel)
        w_next, state = b.predictor.step(w, delta, b.predictor.init_state(1))
        image = b.generator.synthesis(w_next)
        return {
            "mel": mel,
            "audio_embedding": b.audio_encoder(mel),
            "delta": delta,
            "w_next": w_next,
            "state": state,
            "image": image,
            "clip_image": b.clip.encode_image(image),
            "clip_text": b.clip.encode_text(["thunderstorm", "fire crackling"]),
        }


def test_random_bundle_is_consistent_and_marked_untrained(bundle):
    info = bundle.info
    assert set(bundle.parts()) == set(PARTS)
    assert info.num_ws == bundle.generator.num_ws == bundle.sound_inversion.num_ws == bundle.predictor.num_ws
    assert info.layer_groups == bundle.predictor.groups == bundle.sound_inversion.groups
    assert info.embed_dim == bundle.clip.embed_dim == bundle.audio_encoder.embed_dim
    assert not info.is_trained and info.untrained_parts == PARTS
    assert "thunderstorm" in info.labels
    out = _outputs(bundle)
    assert out["image"].shape == (1, 3, 16, 16)
    assert out["mel"].shape == (1, 32, info.segment_frames)
    # F_a lands in CLIP's space: same width, unit length, comparable with CLIP embeddings.
    sim = out["audio_embedding"] @ out["clip_text"].T
    assert sim.shape == (1, 2) and bool((sim.abs() <= 1 + 1e-5).all())


def test_random_bundle_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(7)
    before = torch.rand(1)
    torch.manual_seed(7)
    a = _tiny_bundle(seed=3)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = _tiny_bundle(seed=3)
    for part in PARTS:
        sa, sb = getattr(a, part).state_dict(), getattr(b, part).state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_round_trip_is_bit_identical(bundle, saved):
    assert (saved / BUNDLE_FILE).is_file()
    for part in PARTS:
        assert (saved / f"{part}.safetensors").is_file() and (saved / f"{part}.json").is_file()
    loaded = load_bundle(saved)
    assert loaded.info == bundle.info
    expected, got = _outputs(bundle), _outputs(loaded)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    doc = json.loads((saved / BUNDLE_FILE).read_text())
    assert doc["format"] == "vjapp.bundle" and doc["trained"] == {p: False for p in PARTS}
    assert doc["layer_groups"] == [list(g) for g in bundle.info.layer_groups]
    assert doc["mel"]["n_mels"] == 32 and doc["segment_seconds"] == 0.25


def test_load_only_some_parts(saved):
    b = load_bundle(saved, parts=["sound_inversion", "predictor"])
    assert b.generator is None and b.clip is None and b.audio_encoder is None
    assert b.sound_inversion is not None and b.predictor is not None
    with pytest.raises(ValueError, match="unknown bundle parts"):
        load_bundle(saved, parts=["decoder"])


def test_missing_directory_file_or_part(tmp_path, copy):
    with pytest.raises(CheckpointError, match="no such bundle directory"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="not a bundle"):
        load_bundle(tmp_path)
    (copy / "predictor.safetensors").unlink()
    with pytest.raises(CheckpointError, match="missing part 'predictor'"):
        load_bundle(copy)
    load_bundle(copy, parts=["generator"])  # the other parts are fine on their own


def test_corrupt_part(copy):
    data = (copy / "sound_inversion.safetensors").read_bytes()
    (copy / "sound_inversion.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="part 'sound_inversion'"):
        load_bundle(copy)


def test_mismatched_parts(bundle, copy):
    # A predictor built for another generator (more ws) is refused, naming both sizes.
    other = LatentRNN(LatentRNNConfig(num_ws=10, w_dim=32, hidden_dim=16))
    save_latent_rnn(copy / "predictor", other)
    with pytest.raises(CheckpointError, match=f"predictor has num_ws=10 but the bundle says {bundle.num_ws}"):
        load_bundle(copy)


def test_mismatched_w_dim_between_generator_and_encoder(copy):
    doc = json.loads((copy / BUNDLE_FILE).read_text())
    doc["w_dim"] = 64
    (copy / BUNDLE_FILE).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="w_dim"):
        load_bundle(copy)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda d: d.update(format_version=99), "format_version 99"),
        (lambda d: d.update(format="something.else"), "not a vjapp bundle"),
        (lambda d: d.update(shiny_new_field=1), "unknown bundle fields"),
        (lambda d: d.pop("num_ws"), "lacks"),
        (lambda d: d.update(layer_groups=[[0, 3], [4, 8]]), "invalid bundle.json"),
        (lambda d: d.update(model_rate=-1), "model_rate"),
        (lambda d: d["mel"].update(n_mels=0), "n_mels"),
        (lambda d: d.update(output_size=100), "output_size"),
        (lambda d: d.update(output_size=True), "output_size"),
    ],
)
def test_bad_bundle_json(copy, edit, message):
    doc = json.loads((copy / BUNDLE_FILE).read_text())
    edit(doc)
    (copy / BUNDLE_FILE).write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match=message):
        read_bundle_info(copy)


def test_garbage_bundle_json(copy):
    (copy / BUNDLE_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_bundle(copy)


def test_clip_by_reference(bundle, tmp_path):
    """A big OpenCLIP checkpoint is referenced by path, not copied into the bundle."""
    from safetensors.torch import save_file

    from model.clip import load_clip

    weights = tmp_path / "openclip.safetensors"
    save_file({k: v.contiguous() for k, v in bundle.clip.model.state_dict().items()}, str(weights))
    referenced = Bundle(
        info=bundle.info, generator=bundle.generator, clip=load_clip("vjapp-tiny", weights),
        audio_encoder=bundle.audio_encoder, sound_inversion=bundle.sound_inversion, predictor=bundle.predictor,
    )
    root = save_bundle(tmp_path / "ref", referenced)
    assert not (root / "clip.safetensors").exists()
    info = read_bundle_info(root)
    assert info.clip_source == {"kind": "openclip", "arch": "vjapp-tiny", "weights": str(weights.resolve())}
    loaded = load_bundle(root, parts=["clip"])
    assert torch.equal(loaded.clip.encode_text(["wind"]), bundle.clip.encode_text(["wind"]))
    weights.unlink()
    with pytest.raises(CheckpointError, match="do not exist"):
        load_bundle(root, parts=["clip"])


def test_save_refuses_incomplete_or_inconsistent(bundle, tmp_path):
    no_generator = Bundle(bundle.info, None, bundle.clip, bundle.audio_encoder, bundle.sound_inversion,
                          bundle.predictor)
    with pytest.raises(ValueError, match="needs the generator"):
        save_bundle(tmp_path / "p", no_generator)
    half = Bundle(bundle.info, bundle.generator, bundle.clip, bundle.audio_encoder, bundle.sound_inversion)
    with pytest.raises(ValueError, match="together"):
        save_bundle(tmp_path / "h", half)
    bad_info = BundleInfo(num_ws=bundle.info.num_ws, w_dim=bundle.info.w_dim, embed_dim=999,
                          resolution=16, mel=MEL)
    wrong = Bundle(bad_info, bundle.generator, bundle.clip, bundle.audio_encoder,
                   bundle.sound_inversion, bundle.predictor)
    with pytest.raises(CheckpointError, match="embed_dim"):
        save_bundle(tmp_path / "w", wrong)
    assert not (tmp_path / "w" / BUNDLE_FILE).exists()


@pytest.mark.requires_cuda
def test_bundle_runs_on_gpu(saved):
    cpu = _outputs(load_bundle(saved))
    gpu_bundle = load_bundle(saved, device="cuda")
    gen = torch.Generator().manual_seed(123)
    audio = (torch.rand(1, gpu_bundle.info.segment_samples, generator=gen) * 2 - 1).cuda()
    with torch.no_grad():
        mel = LogMel(gpu_bundle.info.mel)(audio)
        delta = gpu_bundle.sound_inversion(mel)
        emb = gpu_bundle.audio_encoder(mel)
        text = gpu_bundle.clip.encode_text(["thunderstorm", "fire crackling"])
    assert torch.allclose(delta.cpu(), cpu["delta"], atol=1e-4)
    assert torch.allclose(emb.cpu(), cpu["audio_embedding"], atol=1e-4)
    assert torch.allclose(text.cpu(), cpu["clip_text"], atol=1e-4)


def test_output_size_round_trips_and_sets_the_native_display_size(bundle, tmp_path):
    """A bundle trained at a small size may ask to be shown larger: 'native' then means that size."""
    import dataclasses

    from vjapp.engine.show import Show

    assert bundle.info.display_size == bundle.info.resolution == 16
    assert "output_size" not in bundle.info.to_json()
    up = Bundle(dataclasses.replace(bundle.info, output_size=64), bundle.generator, bundle.clip,
                bundle.audio_encoder, bundle.sound_inversion, bundle.predictor)
    path = save_bundle(tmp_path / "up", up)
    loaded = load_bundle(path)
    assert loaded.info.output_size == 64 and loaded.info.display_size == 64
    show = Show(loaded, torch.device("cpu"), torch.float32)
    assert show.renderer.size == 64
    frame = show.renderer.frame(loaded.generator.mapping(torch.zeros(1, loaded.generator.z_dim))[0])
    assert frame.shape == (64, 64, 3)
    show.renderer.set_size("native")
    assert show.renderer.size == 64
    show.renderer.set_size(32)
    assert show.renderer.frame(torch.zeros(loaded.info.num_ws, loaded.info.w_dim)).shape == (32, 32, 3)
