"""Our StyleGAN2 generator: shapes, latent handling, noise, checkpoints, fast inference path."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from model.formats import CheckpointError
from model.stylegan2 import (
    KIND,
    Generator,
    InferenceGenerator,
    StyleGAN2Config,
    load_generator,
    prepare_for_inference,
    save_generator,
)


def tiny_config(resolution: int = 32, **kw) -> StyleGAN2Config:
    base = dict(z_dim=16, w_dim=24, mapping_layers=2, mapping_hidden_dim=20, resolution=resolution,
                channel_base=16 * resolution, channel_max=32)
    base.update(kw)
    return StyleGAN2Config(**base)


def tiny_generator(resolution: int = 32, seed: int = 0, **kw) -> Generator:
    """A small generator whose noise strengths, biases and w_avg are non-zero, so all terms show."""
    torch.manual_seed(seed)
    G = Generator(tiny_config(resolution, **kw)).eval()
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.3)
            elif name.endswith("bias") and "affine" not in name:
                p.normal_(0, 0.2)
        G.mapping.w_avg.normal_(0, 0.5)
    return G


@pytest.mark.parametrize("resolution", [4, 8, 16, 32, 64, 128, 256])
def test_output_shapes_and_num_ws(resolution: int) -> None:
    G = Generator(tiny_config(resolution, channel_base=4 * resolution, channel_max=8)).eval()
    assert G.num_ws == G.config.num_ws == 2 * int(math.log2(resolution)) - 2
    z = torch.randn(2, 16)
    with torch.no_grad():
        ws = G.mapping(z)
        img = G.synthesis(ws)
        img2 = G(z)
    assert ws.shape == (2, G.num_ws, 24)
    assert img.shape == (2, 3, resolution, resolution)
    assert img.dtype == torch.float32 and bool(torch.isfinite(img).all())
    assert torch.equal(img, img2)


def test_nvidia_state_dict_names_and_channels() -> None:
    cfg = tiny_config(16, channel_base=128, channel_max=16)  # channels: 4..8 -> 16, 16 -> 8
    G = Generator(cfg)
    state = G.state_dict()
    conv = ["weight", "bias", "noise_strength", "noise_const", "resample_filter", "affine.weight", "affine.bias"]
    rgb = ["weight", "bias", "affine.weight", "affine.bias"]
    expected = {"mapping.w_avg"} | {f"mapping.fc{i}.{p}" for i in range(2) for p in ("weight", "bias")}
    expected |= {"synthesis.b4.const", "synthesis.b4.resample_filter"}
    expected |= {f"synthesis.b4.conv1.{p}" for p in conv} | {f"synthesis.b4.torgb.{p}" for p in rgb}
    for res in (8, 16):
        expected |= {f"synthesis.b{res}.resample_filter"}
        expected |= {f"synthesis.b{res}.{layer}.{p}" for layer in ("conv0", "conv1") for p in conv}
        expected |= {f"synthesis.b{res}.torgb.{p}" for p in rgb}
    assert set(state) == expected
    assert state["synthesis.b4.const"].shape == (16, 4, 4)
    assert state["synthesis.b16.conv0.weight"].shape == (8, 16, 3, 3)
    assert state["synthesis.b16.conv1.noise_const"].shape == (16, 16)
    assert state["synthesis.b16.torgb.weight"].shape == (3, 8, 1, 1)
    assert state["mapping.fc0.weight"].shape == (20, 16)
    assert state["mapping.fc1.weight"].shape == (24, 20)
    f = state["synthesis.b8.resample_filter"]
    assert torch.allclose(f, torch.outer(torch.tensor([1.0, 3, 3, 1]), torch.tensor([1.0, 3, 3, 1])) / 64)
    # Raw weights: the mapping weights carry 1/lr_multiplier, as NVIDIA initializes them.
    assert 50 < float(state["mapping.fc0.weight"].std()) < 200


def test_truncation_toward_w_avg() -> None:
    G = tiny_generator(16)
    z = torch.randn(3, 16)
    with torch.no_grad():
        full = G.mapping(z)
        at_avg = G.mapping(z, truncation_psi=0.0)
        cut = G.mapping(z, truncation_psi=0.0, truncation_cutoff=2)
        half = G.mapping(z, truncation_psi=0.5)
    w_avg = G.mapping.w_avg
    assert torch.allclose(at_avg, w_avg.expand_as(at_avg))
    assert torch.allclose(cut[:, :2], w_avg.expand(3, 2, -1))
    assert torch.equal(cut[:, 2:], full[:, 2:])
    assert torch.allclose(half, (full + w_avg) / 2, atol=1e-6)
    # All ws of an untruncated mapping are the same W.
    assert torch.equal(full[:, 0], full[:, -1])


def test_update_emas_tracks_w_average() -> None:
    G = tiny_generator(8)
    before = G.mapping.w_avg.clone()
    z = torch.randn(5, 16)
    with torch.no_grad():
        w = G.mapping(z, update_emas=True)[:, 0]
    expected = w.mean(0).lerp(before, G.config.w_avg_beta)
    assert torch.allclose(G.mapping.w_avg, expected, atol=1e-6)
    with torch.no_grad():
        G.mapping(z)
    assert torch.allclose(G.mapping.w_avg, expected, atol=1e-6)  # no update without update_emas


def test_noise_modes() -> None:
    G = tiny_generator(16)
    ws = G.mapping(torch.randn(2, 16)).detach()
    with torch.no_grad():
        c1, c2 = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
        r1, r2 = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
        n1, n2 = G.synthesis(ws, noise_mode="none"), G.synthesis(ws, noise_mode="none")
    assert torch.equal(c1, c2) and torch.equal(n1, n2)
    assert (r1 - r2).abs().max() > 1e-3
    assert (c1 - n1).abs().max() > 1e-3
    # With zero noise strength the modes agree.
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.zero_()
        assert torch.allclose(G.synthesis(ws, "random"), G.synthesis(ws, "none"), atol=1e-6)
        assert torch.allclose(G.synthesis(ws, "const"), G.synthesis(ws, "none"), atol=1e-6)


def test_synthesis_is_differentiable_in_ws() -> None:
    G = tiny_generator(16)
    ws = G.mapping(torch.randn(2, 16)).detach().requires_grad_(True)
    G.synthesis(ws).square().mean().backward()
    assert ws.grad is not None and bool(torch.isfinite(ws.grad).all()) and ws.grad.abs().sum() > 0


def test_conv_clamp_limits_layer_outputs() -> None:
    G = tiny_generator(16, conv_clamp=0.05)
    with torch.no_grad():
        img = G(torch.randn(2, 16))
    # Three toRGB outputs, each clamped to +-0.05, up-sampled with a gain-preserving filter.
    assert float(img.abs().max()) <= 3 * 0.05 * 1.0001 + 1e-6


@pytest.mark.parametrize(
    "kwargs",
    [dict(resolution=3), dict(resolution=2048), dict(resolution=2), dict(z_dim=0), dict(w_dim=-4),
     dict(mapping_layers=0), dict(channel_max=0), dict(conv_clamp=-1.0), dict(resample_filter=()),
     dict(mapping_lr_multiplier=0.0), dict(w_avg_beta=1.5), dict(channel_base=8, resolution=16)],
)
def test_bad_config_raises_value_error(kwargs) -> None:
    with pytest.raises(ValueError):
        StyleGAN2Config(**kwargs)


def test_bad_inputs_raise_value_error() -> None:
    G = tiny_generator(8)
    fast = prepare_for_inference(G, torch.float32)
    good = torch.zeros(1, G.num_ws, G.w_dim)
    for synth in (G.synthesis, fast.synthesis):
        with pytest.raises(ValueError, match=r"ws of shape \[N, 4, 24\]"):
            synth(torch.zeros(1, G.num_ws + 1, G.w_dim))
        with pytest.raises(ValueError, match="ws of shape"):
            synth(torch.zeros(G.num_ws, G.w_dim))
        with pytest.raises(ValueError, match="torch.Tensor"):
            synth([[0.0]])
        with pytest.raises(ValueError, match="floating"):
            synth(good.long())
        with pytest.raises(ValueError, match="noise_mode"):
            synth(good, noise_mode="fixed")
    with pytest.raises(ValueError, match=r"z of shape \[N, 16\]"):
        G.mapping(torch.zeros(2, 15))
    with pytest.raises(ValueError, match="dtype"):
        prepare_for_inference(G, torch.float64)


def test_save_load_round_trip_is_bit_exact(tmp_path) -> None:
    G = tiny_generator(16, conv_clamp=256.0)
    weights, config = save_generator(tmp_path / "g", G, metadata={"source": "test"})
    assert weights.name == "g.safetensors" and config.name == "g.json"
    G2 = load_generator(tmp_path / "g")
    assert G2.config == G.config and isinstance(G2.config.resample_filter, tuple)
    s1, s2 = G.state_dict(), G2.state_dict()
    assert s1.keys() == s2.keys() and all(torch.equal(s1[k], s2[k]) for k in s1)
    z = torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(G(z, 0.7, 2), G2(z, 0.7, 2))


def test_nan_weight_file_raises_checkpoint_error(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    G = tiny_generator(8)
    weights, _ = save_generator(tmp_path / "g", G)
    state = load_file(str(weights))
    state["synthesis.b8.conv1.weight"][0, 0, 0, 0] = float("nan")
    save_file(state, str(weights), metadata={"format": "vjapp.network", "kind": KIND})
    with pytest.raises(CheckpointError, match="NaN"):
        load_generator(tmp_path / "g")


def test_wrong_kind_and_bad_config_raise_checkpoint_error(tmp_path) -> None:
    import json

    G = tiny_generator(8)
    _, config = save_generator(tmp_path / "g", G)
    doc = json.loads(config.read_text())
    doc["config"]["resolution"] = 12
    config.write_text(json.dumps(doc))
    with pytest.raises(CheckpointError, match="resolution"):
        load_generator(tmp_path / "g")


# Tolerances measured on random tiny generators (image std 1-3): fp32 agrees to ~1e-6; fp16 max
# error <= 1.1% of the image std; bf16 (8-bit mantissa) max error 4-7% of the std.
@pytest.mark.parametrize(
    "dtype, channels_last, rel_max",
    [(torch.float32, True, 1e-4), (torch.float32, False, 1e-4), (torch.bfloat16, True, 0.12), (torch.float16, True, 0.03)],
)
def test_prepare_for_inference_matches_reference(dtype, channels_last, rel_max) -> None:
    # 32 px with 8..32 channels exercises both batch-1 strategies (weights vs activations).
    G = tiny_generator(32, seed=3, channel_base=256, channel_max=32)
    fast = prepare_for_inference(G, dtype=dtype, channels_last=channels_last)
    assert isinstance(fast, InferenceGenerator)
    folds = {c.fold_weights for c in fast.convs}
    assert folds == {True, False}
    ws = G.mapping(torch.randn(3, 16), truncation_psi=0.8).detach()
    with torch.no_grad():
        for mode in ("const", "none"):
            ref = G.synthesis(ws, noise_mode=mode)
            scale = float(ref.std())
            for batch in (ws[:1], ws):  # batch 1 (live case) and batch 3
                out = fast.synthesis(batch, noise_mode=mode)
                assert out.dtype == torch.float32 and out.shape == (batch.shape[0], 3, 32, 32)
                err = (out - ref[: batch.shape[0]]).abs()
                assert float(err.max()) <= rel_max * scale, (mode, batch.shape[0], float(err.max()), scale)
                assert float(err.mean()) <= rel_max * scale / 5
        r1, r2 = fast.synthesis(ws[:1], "random"), fast.synthesis(ws[:1], "random")
        assert (r1 - r2).abs().max() > 1e-3


def test_inference_generator_keeps_the_generator_interface() -> None:
    G = tiny_generator(16)
    fast = prepare_for_inference(G)
    assert (fast.num_ws, fast.w_dim, fast.z_dim, fast.img_resolution) == (G.num_ws, G.w_dim, G.z_dim, 16)
    z = torch.randn(1, 16)
    ws = fast.mapping(z, truncation_psi=0.7)
    assert torch.equal(ws, G.mapping(z, truncation_psi=0.7))
    assert fast(ws).shape == (1, 3, 16, 16)
    # The copy is frozen: changing G afterwards does not change it.
    before = fast.synthesis(ws)
    with torch.no_grad():
        G.synthesis.b16.conv1.weight.mul_(-1)
    assert torch.equal(fast.synthesis(ws), before)


def test_config_round_trips_through_dataclass_fields() -> None:
    cfg = tiny_config(32, conv_clamp=256)
    assert cfg.conv_clamp == 256.0 and isinstance(cfg.conv_clamp, float)
    assert StyleGAN2Config(**dataclasses.asdict(cfg)) == cfg


def test_benchmark_script_runs(capsys) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "generator.py"
    spec = importlib.util.spec_from_file_location("bench_generator", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    assert bench.main(["--sizes", "8", "--dtypes", "ref", "fp32", "bf16", "--channel-max", "8",
                       "--channel-base", "64", "--iters", "2", "--warmup", "1", "--no-flush-denormal"]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith("8 ")]
    assert [r[3] for r in rows] == ["ref", "fp32", "bf16"]
    assert all(float(r[8]) > 0 and float(r[9]) > 0 and float(r[10]) > 0 for r in rows)  # MACs, floor, ratio
    assert all(float(r[5]) > 0 for r in rows)


@pytest.mark.requires_cuda
def test_cuda_matches_cpu() -> None:
    G = tiny_generator(32)
    ws = G.mapping(torch.randn(2, 16)).detach()
    with torch.no_grad():
        ref = G.synthesis(ws)
        Gc = G.to("cuda")
        assert (Gc.synthesis(ws.cuda()).cpu() - ref).abs().max() < 1e-3
        fast = prepare_for_inference(Gc, torch.float16)
        out = fast.synthesis(ws.cuda()[:1])
        assert out.dtype == torch.float32 and (out.cpu() - ref[:1]).abs().max() < 0.05 * float(ref.std())
        assert fast.synthesis(ws.cuda(), noise_mode="random").shape == (2, 3, 32, 32)


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 1, 3), (1, 1)])
def test_fast_upsample_equals_zero_insertion_fir(taps):
    """upsample2d's transposed-convolution shortcut is NVIDIA's zero-insert + pad + FIR, exactly."""
    from model.stylegan2 import fir_filter2d, setup_filter, upsample2d

    f = setup_filter(taps) if taps != (1, 2, 1, 3) else torch.rand(4, 4)
    x = torch.randn(2, 3, 9, 7)
    n, c, h, w = x.shape
    fw = f.shape[-1]
    y = x.new_zeros(n, c, 2 * h, 2 * w)
    y[:, :, ::2, ::2] = x
    ref = fir_filter2d(y, f, ((fw + 1) // 2, (fw - 2) // 2), gain=4.0)
    out = upsample2d(x, f)
    assert out.shape == ref.shape == (2, 3, 18, 14)
    assert torch.allclose(out, ref, atol=1e-5)
