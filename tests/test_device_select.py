"""Which device the show runs on: CUDA, the Apple-silicon GPU (MPS), or the CPU.

This machine has neither GPU, so the choice is tested with torch's availability checks replaced;
what runs on a real Mac (the MPS kernels themselves) could not be run here.
"""

from __future__ import annotations

import argparse

import pytest
import torch

from vjapp.cli import main
from vjapp.engine.frames import MPS_ABSENT, resolve_device, resolve_dtype
from vjapp.gui import add_arguments


@pytest.fixture
def gpus(monkeypatch):
    def set_(cuda: bool, mps: bool) -> None:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    return set_


def test_auto_prefers_cuda_then_mps_then_cpu(gpus):
    gpus(cuda=True, mps=True)
    assert resolve_device("auto").type == "cuda"
    gpus(cuda=False, mps=True)
    assert resolve_device("auto").type == "mps"
    gpus(cuda=False, mps=False)
    assert resolve_device("auto").type == "cpu"


def test_asking_for_a_missing_gpu_says_what_it_needs(gpus):
    gpus(cuda=False, mps=False)
    with pytest.raises(RuntimeError, match="Apple silicon, macOS 12.3"):
        resolve_device("mps")
    with pytest.raises(RuntimeError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert "torch build with MPS" in MPS_ABSENT


def test_half_precision_on_gpus_bf16_on_the_cpu():
    assert resolve_dtype("auto", torch.device("mps")) == torch.float16
    assert resolve_dtype("auto", torch.device("cuda")) == torch.float16
    assert resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16


def test_the_engine_plays_on_the_cpu_when_mps_is_missing(gpus, tiny_bundle_dir):
    from model.bundle import load_bundle
    from vjapp.engine.controls import Controls
    from vjapp.engine.engine import Engine, EngineConfig
    from vjapp.engine.mailbox import Mailbox

    gpus(cuda=False, mps=False)
    errors: list[str] = []
    engine = Engine(load_bundle(tiny_bundle_dir), Mailbox(Controls()), [], EngineConfig(device="mps", threads=1),
                    on_error=errors.append)
    engine.start()
    try:
        assert engine.ready.wait(60)
        assert engine.show is not None and engine.show.device.type == "cpu"
        assert any("MPS" in e and "running on the CPU instead" in e for e in errors), errors
    finally:
        engine.stop()


def test_the_cli_takes_mps_and_refuses_other_names(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["gui", "--device", "metal"])
    assert exc.value.code == 2
    assert "expected auto, cpu, mps, cuda or cuda:N" in capsys.readouterr().err
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert p.parse_args(["--device", "mps"]).device == "mps"
