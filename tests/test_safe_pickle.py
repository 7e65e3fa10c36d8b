"""Reading NVIDIA network pickles and rosinality checkpoints as data, with nothing executed."""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from model.formats import CheckpointError
from model.safe_pickle import (
    EasyDict,
    PersistentRecord,
    check_finite,
    detect_format,
    load_nvidia_pickle,
    load_rosinality_checkpoint,
    record_init_kwargs,
    record_state_dict,
)
from nvidia_pickle import TinyDense, dump_nvidia_pickle, make_g, snapshot, torch_save_bytes


@pytest.fixture(autouse=True)
def no_foreign_modules():
    yield
    bad = [m for m in sys.modules if m.split(".")[0] in ("dnnlib", "torch_utils") or m.startswith("_imported_module_")]
    assert not bad, f"loading imported NVIDIA modules: {bad}"


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_nvidia_pickle_round_trip(tmp_path: Path, protocol: int) -> None:
    G = make_g()
    path = dump_nvidia_pickle(tmp_path / "net.pkl", snapshot(G, D=TinyDense(in_features=3, out_features=1)), protocol=protocol)
    data = load_nvidia_pickle(path)

    assert set(data) == {"G", "D", "G_ema", "augment_pipe", "training_set_kwargs"}
    rec = data["G_ema"]
    assert isinstance(rec, PersistentRecord) and rec.class_name == "TinyG" and rec.version == 6
    assert data["D"].class_name == "TinyDense"
    assert data["training_set_kwargs"]["resolution"] == 16

    # Same names, same values as nn.Module.state_dict(); the non-persistent buffer is skipped.
    state = record_state_dict(rec)
    expected = G.state_dict()
    assert list(state) == list(expected)
    assert "mapping.scratch" not in state
    for name, value in expected.items():
        assert torch.equal(state[name], value), name
    assert torch.equal(state["view"], G.const[1])

    kwargs = record_init_kwargs(rec)
    assert kwargs == {"z_dim": 5, "w_dim": 6, "mapping_kwargs": {"num_layers": 2}}
    assert type(kwargs["mapping_kwargs"]) is dict  # EasyDicts flattened to plain dicts
    assert isinstance(rec.state["_init_kwargs"]["mapping_kwargs"], EasyDict)
    assert rec.state["_init_kwargs"]["mapping_kwargs"].num_layers == 2

    fc0 = rec.state["_modules"]["mapping"].state["_modules"]["fc0"]
    assert record_init_kwargs(fc0) == {"in_features": 5, "out_features": 6, "lr_multiplier": 0.01}
    assert isinstance(fc0.state["weight_gain"], np.float64)
    assert fc0.state["weight_gain"] == G.mapping.fc0.weight_gain
    np.testing.assert_array_equal(fc0.state["in_size"], [5, 5])
    assert rec.state["block_resolutions"] == [4, 8]


def test_records_keep_source_as_text_only(tmp_path: Path) -> None:
    src = "import os\nclass SynthesisInput:\n    pass\nclass TinyG:\n    pass\n"
    path = dump_nvidia_pickle(tmp_path / "net.pkl", snapshot(make_g()), module_src=src)
    rec = load_nvidia_pickle(path)["G_ema"]
    assert rec.module_src == src
    assert rec.module_name == "training.networks_stylegan3"  # recognised from the text, not run
    assert len(rec.module_sha256) == 64
    assert "TinyG" in repr(rec) and "import os" not in repr(rec)


def test_record_cannot_be_modified_by_build(tmp_path: Path) -> None:
    rec = load_nvidia_pickle(dump_nvidia_pickle(tmp_path / "n.pkl", snapshot(make_g())))["G_ema"]
    with pytest.raises(CheckpointError):
        rec.__setstate__({"class_name": "Evil"})
    with pytest.raises(CheckpointError):
        EasyDict.__getattr__ = None  # type: ignore[method-assign]


def test_check_finite_names_the_tensor() -> None:
    check_finite({"a": torch.ones(2), "i": torch.arange(3)}, "src")
    with pytest.raises(CheckpointError, match=r"src: b contains NaN"):
        check_finite({"a": torch.ones(2), "b": torch.tensor([0.0, float("nan")])}, "src")


def test_detect_format_by_content(tmp_path: Path) -> None:
    pkl = dump_nvidia_pickle(tmp_path / "model.pt", snapshot(make_g()))  # misleading extension
    assert detect_format(pkl) == "nvidia-pkl"
    zip_pt = tmp_path / "model.pkl"
    zip_pt.write_bytes(torch_save_bytes({"g_ema": {"w": torch.ones(1)}}))
    assert detect_format(zip_pt) == "rosinality-pt"
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(torch_save_bytes({"g_ema": {"w": torch.ones(1)}}, legacy=True))
    assert detect_format(legacy) == "rosinality-pt"
    save_file({"w": torch.ones(2)}, str(tmp_path / "native.safetensors"))
    assert detect_format(tmp_path / "native.safetensors") == "native"
    (tmp_path / "native.json").write_text('{"format": "vjapp.network"}')
    assert detect_format(tmp_path / "native.json") == "native"
    (tmp_path / "text.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a recognized checkpoint"):
        detect_format(tmp_path / "text.txt")
    with pytest.raises(CheckpointError, match="no such file"):
        detect_format(tmp_path / "missing.pkl")


def rosinality_state() -> dict[str, torch.Tensor]:
    return {"style.1.weight": torch.randn(4, 4), "style.1.bias": torch.zeros(4)}


@pytest.mark.parametrize("legacy", [False, True])
def test_rosinality_checkpoint_with_training_args(tmp_path: Path, legacy: bool) -> None:
    """rosinality's train.py pickles its argparse.Namespace next to the state dicts."""
    state = rosinality_state()
    ckpt = {"g": state, "d": {"x": torch.ones(1)}, "g_ema": state, "g_optim": {"state": {}, "param_groups": [{"lr": 0.002}]},
            "args": argparse.Namespace(size=16, latent=4, n_mlp=1, channel_multiplier=2), "latent_avg": torch.zeros(4)}
    path = tmp_path / "ckpt.pt"
    path.write_bytes(torch_save_bytes(ckpt, legacy=legacy))
    loaded = load_rosinality_checkpoint(path)
    assert loaded["args"].size == 16 and isinstance(loaded["args"], argparse.Namespace)
    assert torch.equal(loaded["g_ema"]["style.1.weight"], state["style.1.weight"])


def test_rosinality_wrong_structure(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    path.write_bytes(torch_save_bytes([torch.ones(1)]))
    with pytest.raises(CheckpointError, match="not a rosinality checkpoint"):
        load_rosinality_checkpoint(path)
    path.write_bytes(torch_save_bytes({"g": rosinality_state()}))
    with pytest.raises(CheckpointError, match="no 'g_ema' state dict"):
        load_rosinality_checkpoint(path)
    path.write_bytes(torch_save_bytes({"g_ema": {"style.1.weight": [1.0, 2.0]}}))
    with pytest.raises(CheckpointError, match="not a tensor"):
        load_rosinality_checkpoint(path)
    nv = dump_nvidia_pickle(tmp_path / "net.pkl", snapshot(make_g()))
    with pytest.raises(CheckpointError, match="not a torch.save file"):
        load_rosinality_checkpoint(nv)


def test_nvidia_loader_rejects_torch_save_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pkl"
    path.write_bytes(torch_save_bytes({"g_ema": rosinality_state()}))
    with pytest.raises(CheckpointError, match="a torch.save file"):
        load_nvidia_pickle(path)


def test_plain_pickle_of_real_tensors_loads(tmp_path: Path) -> None:
    """Tensors written by the stock pickler (torch's own reducers) read back through ours."""
    t = torch.randn(3, 4)[:, 1:]  # a non-contiguous view
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps({"G_ema": None, "t": t, "p": nn.Parameter(torch.ones(2))}, protocol=4))
    with pytest.raises(CheckpointError, match="no 'G_ema' or 'G' network"):
        load_nvidia_pickle(path)
    from model.safe_pickle import RestrictedUnpickler

    with path.open("rb") as f:
        data = RestrictedUnpickler(f).load()
    assert torch.equal(data["t"], t) and data["t"].stride() == t.stride()
    assert isinstance(data["p"], nn.Parameter) and not data["p"].requires_grad
