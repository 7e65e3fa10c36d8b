"""Shared test settings: no GPU, no display, no sound card, no network."""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import torch

from midi_fixtures import controller, jack_server  # noqa: F401 - fixtures for test_midi and test_rig_ui

# One intra-op thread: tests run tiny models, often beside engine, audio and Qt threads, where
# two OpenMP threads on two cores were measured 5-50x slower than one.
torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "requires_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_bundle_dir(tmp_path_factory: pytest.TempPathFactory):
    """A small, randomly initialized, saved bundle (32 px generator, tiny CLIP, 16 kHz mel)."""
    from model.audio_features import MelConfig
    from model.bundle import random_bundle, save_bundle

    bundle = random_bundle(
        resolution=32, channel_max=32, w_dim=64, mapping_layers=2, encoder_channels=(8, 16, 16, 16),
        hidden_dim=32, mel=MelConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=32),
        model_rate=10.0, segment_seconds=0.5,
    )
    return save_bundle(tmp_path_factory.mktemp("bundle") / "tiny", bundle)


@pytest.fixture(autouse=True)
def _no_flush_to_zero_leaks():
    """``vjapp bench``/``render`` turn on flush-to-zero for speed (per thread); undo it after each
    test so float-property tests (hypothesis refuses to run under FTZ) see a normal FPU."""
    yield
    torch.set_flush_denormal(False)


@pytest.fixture
def make_app(qtbot, tmp_path, tiny_bundle_dir):
    """Build apps like ``vjapp gui --windowed --osc-port 0`` in a temporary home; shut them down after."""
    from vjapp.app import build_app
    from vjapp.gui import default_args

    built: list[Any] = []

    def make(**overrides: Any) -> Any:
        options = dict(bundle=str(tiny_bundle_dir), windowed=True, osc_port=0, mute=True, threads=1,
                       settings=str(tmp_path / "settings.ini"), data_dir=str(tmp_path / "data"),
                       record_dir=str(tmp_path / "rec"))
        options.update(overrides)
        ctx = build_app(default_args(**options))
        built.append(ctx)
        ctx.show()
        return ctx

    yield make
    for ctx in built:
        ctx.shutdown()


@pytest.fixture
def show(tiny_bundle_dir):
    """A :class:`~vjapp.engine.show.Show` on the tiny bundle, float32 on the CPU, default controls."""
    from model.bundle import load_bundle
    from vjapp.engine.controls import Controls
    from vjapp.engine.show import Show

    s = Show(load_bundle(tiny_bundle_dir), torch.device("cpu"), torch.float32)
    s.apply(Controls(), 0.0, immediate=True)
    return s
