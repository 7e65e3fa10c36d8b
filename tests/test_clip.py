"""The CLIP wrapper: tiny custom config, offline, normalised outputs, safe weight loading."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from model.clip import (
    CLIP_CONFIG_DIR,
    ClipConfig,
    ClipModel,
    available_clip_configs,
    build_clip,
    load_clip,
    register_clip_configs,
    resolve_clip_config,
    save_clip,
)
from model.formats import CheckpointError
from model.openclip_compat import import_open_clip

try:  # OpenCLIP is the optional 'clip' extra; import it the one supported way
    import_open_clip()
except ImportError as exc:  # pragma: no cover - only without the extra
    pytest.skip(f"OpenCLIP not installed: {exc}", allow_module_level=True)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def tiny() -> ClipModel:
    torch.manual_seed(0)
    return load_clip("vjapp-tiny").eval()


def test_tiny_config_ships_and_resolves():
    assert "vjapp-tiny" in available_clip_configs()
    cfg = resolve_clip_config("vjapp-tiny")
    assert (cfg.embed_dim, cfg.image_size, cfg.context_length) == (128, 64, 32)
    # A path to the JSON works the same as the name.
    by_path = resolve_clip_config(str(CLIP_CONFIG_DIR / "vjapp-tiny.json"))
    assert by_path.model_cfg == cfg.model_cfg


def test_encode_image_is_normalised_and_differentiable(tiny):
    images = (torch.rand(3, 3, 96, 128) * 2 - 1).requires_grad_(True)  # any size, non-square
    emb = tiny.encode_image(images)
    assert emb.shape == (3, tiny.embed_dim)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    emb[:, 0].sum().backward()  # a CLIP loss can steer the generator through this
    assert images.grad is not None and images.grad.abs().sum() > 0
    # Preprocessing is CLIP's: [-1, 1] -> [0, 1] -> (x - mean) / std, at the model's input size.
    x = tiny.preprocess(torch.zeros(1, 3, 64, 64))
    expected = (0.5 - torch.tensor(tiny.config.mean)) / torch.tensor(tiny.config.std)
    assert torch.allclose(x[0, :, 10, 10], expected, atol=1e-6)


def test_encode_text_offline(tiny):
    emb = tiny.encode_text(["fire crackling", "thunderstorm", "fire crackling"])
    assert emb.shape == (3, tiny.embed_dim)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.equal(emb[0], emb[2]) and not torch.allclose(emb[0], emb[1])
    tokens = tiny.tokenize("raining")
    assert tokens.shape == (1, 32) and tokens.dtype == torch.long
    with pytest.raises(ValueError, match="strings"):
        tiny.encode_text([])


def test_matches_open_clip_create_model(tiny):
    """Our builder gives the same network as OpenCLIP's own factory for the same config."""
    open_clip = import_open_clip()
    register_clip_configs()
    register_clip_configs()  # idempotent
    ref = open_clip.create_model("vjapp-tiny", pretrained=None)
    ref.load_state_dict(tiny.model.state_dict(), strict=True)
    ref.eval()
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    tokens = tiny.tokenize(["waterfall", "volcano"])
    with torch.no_grad():
        assert torch.allclose(ref.encode_image(tiny.preprocess(images), normalize=True), tiny.encode_image(images))
        assert torch.allclose(ref.encode_text(tokens, normalize=True), tiny.encode_text(["waterfall", "volcano"]))


def test_local_weights_safetensors_and_weights_only_pt(tiny, tmp_path):
    from safetensors.torch import save_file

    state = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": {"module." + k: v for k, v in state.items()}}, tmp_path / "w.pt")
    images = torch.rand(1, 3, 64, 64) * 2 - 1
    expected = tiny.encode_image(images)
    for name in ("w.safetensors", "w.pt"):
        clip = load_clip("vjapp-tiny", tmp_path / name)
        assert clip.config.weights == str(tmp_path / name)
        assert torch.equal(clip.encode_image(images), expected)


class _Payload:
    """Pickles to a call that would create a file if a loader ever ran it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_hostile_or_wrong_weights_raise_checkpoint_error(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"visual.proj": _Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="weights-only"):
        load_clip("vjapp-tiny", tmp_path / "evil.pt")
    assert not marker.exists()  # nothing was executed

    torch.save({"visual.proj": torch.zeros(3, 3)}, tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="do not match"):
        load_clip("vjapp-tiny", tmp_path / "wrong.pt")
    with pytest.raises(CheckpointError, match="no such"):
        load_clip("vjapp-tiny", tmp_path / "missing.safetensors")
    (tmp_path / "trunc.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_clip("vjapp-tiny", tmp_path / "trunc.safetensors")


def test_unknown_or_unsupported_architectures(tmp_path):
    with pytest.raises(CheckpointError, match="unknown CLIP architecture"):
        load_clip("no-such-arch")
    cfg = json.loads((CLIP_CONFIG_DIR / "vjapp-tiny.json").read_text())
    cfg["text_cfg"]["hf_model_name"] = "some/hub-model"
    (tmp_path / "hf.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="download"):
        load_clip(str(tmp_path / "hf.json"))
    with pytest.raises(ValueError, match="disagrees"):
        ClipConfig(arch="x", model_cfg=json.loads((CLIP_CONFIG_DIR / "vjapp-tiny.json").read_text()), embed_dim=512)


def test_native_round_trip_is_bit_identical(tiny, tmp_path):
    save_clip(tmp_path / "clip", tiny, metadata={"note": "test"})
    doc = json.loads((tmp_path / "clip.json").read_text())
    assert doc["kind"] == "clip" and doc["config"]["model_cfg"]["embed_dim"] == 128
    back = load_clip(tmp_path / "clip.json")  # the native format needs no OpenCLIP config lookup
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    assert torch.equal(back.encode_image(images), tiny.encode_image(images))
    assert torch.equal(back.encode_text(["wind"]), tiny.encode_text(["wind"]))
    with pytest.raises(ValueError, match="own weights"):
        load_clip(tmp_path / "clip.json", tmp_path / "x.safetensors")


def test_build_clip_is_random_and_seedable():
    torch.manual_seed(1)
    a = build_clip("vjapp-tiny")
    torch.manual_seed(1)
    b = build_clip("vjapp-tiny")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
