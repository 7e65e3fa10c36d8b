"""The native checkpoint format: bit-exact round trips and clear errors for bad files."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from model.formats import CheckpointError, load_network, network_paths, save_network


@dataclass
class TinyConfig:
    in_dim: int = 4
    out_dim: int = 3
    sizes: tuple[int, ...] = (2, 2)


class Tiny(nn.Module):
    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        if config.in_dim <= 0:
            raise ValueError("in_dim must be positive")
        self.fc = nn.Linear(config.in_dim, config.out_dim)
        self.register_buffer("scale", torch.full(config.sizes, 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.scale.sum()


def _saved(tmp_path, config=TinyConfig()):
    torch.manual_seed(0)
    net = Tiny(config)
    save_network(tmp_path / "tiny", net, config, kind="tiny", metadata={"note": "test"})
    return net


def _load(tmp_path):
    return load_network(tmp_path / "tiny", TinyConfig, Tiny, kind="tiny")


def test_round_trip_is_bit_exact(tmp_path):
    net = _saved(tmp_path, TinyConfig(in_dim=5, sizes=(3, 1)))
    loaded, config, meta = _load(tmp_path)
    assert config == TinyConfig(in_dim=5, sizes=(3, 1))  # tuples survive JSON
    assert meta == {"note": "test"}
    for k, v in net.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])
    x = torch.randn(7, 5)
    assert torch.equal(net(x), loaded(x))
    assert not loaded.training


def test_paths_accept_stem_or_either_file(tmp_path):
    assert network_paths(tmp_path / "a.json") == network_paths(tmp_path / "a.safetensors") == network_paths(tmp_path / "a")


def test_missing_files(tmp_path):
    with pytest.raises(CheckpointError, match="no such config"):
        _load(tmp_path)
    _saved(tmp_path)
    (tmp_path / "tiny.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no such weights"):
        _load(tmp_path)


@pytest.mark.parametrize("cut", [0, 4, 40, -7])
def test_empty_and_truncated_weights(tmp_path, cut):
    _saved(tmp_path)
    f = tmp_path / "tiny.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="empty|truncated|corrupt"):
        _load(tmp_path)


def test_random_bytes_weights(tmp_path):
    _saved(tmp_path)
    (tmp_path / "tiny.safetensors").write_bytes(bytes(range(256)) * 4)
    with pytest.raises(CheckpointError):
        _load(tmp_path)


def _edit_json(tmp_path, fn):
    p = tmp_path / "tiny.json"
    doc = json.loads(p.read_text())
    fn(doc)
    p.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d.update(kind="stylegan2"), "expected 'tiny'"),
        (lambda d: d.update(format_version=99), "not supported"),
        (lambda d: d.update(format="something-else"), "not a vjapp network"),
        (lambda d: d["config"].update(bogus=1), "unknown config fields"),
        (lambda d: d["config"].update(in_dim=-1), "not describe a valid"),
        (lambda d: d["config"].update(in_dim=6), "shape"),
        (lambda d: d.pop("config"), "missing 'config'"),
    ],
)
def test_bad_configs(tmp_path, edit, message):
    _saved(tmp_path)
    _edit_json(tmp_path, edit)
    with pytest.raises(CheckpointError, match=message):
        _load(tmp_path)


def test_config_not_json(tmp_path):
    _saved(tmp_path)
    (tmp_path / "tiny.json").write_bytes(b"\xff\xfe not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        _load(tmp_path)


def test_nan_weights_rejected(tmp_path):
    from safetensors.torch import load_file, save_file

    _saved(tmp_path)
    f = tmp_path / "tiny.safetensors"
    state = load_file(str(f))
    state["fc.weight"][0, 0] = float("nan")
    save_file(state, str(f))
    with pytest.raises(CheckpointError, match="NaN"):
        _load(tmp_path)


def test_missing_tensor_rejected(tmp_path):
    from safetensors.torch import load_file, save_file

    _saved(tmp_path)
    f = tmp_path / "tiny.safetensors"
    state = load_file(str(f))
    del state["scale"]
    save_file(state, str(f))
    with pytest.raises(CheckpointError, match="missing"):
        _load(tmp_path)
