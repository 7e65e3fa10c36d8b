"""The fast StyleGAN2 synthesis path (prepare_for_inference) against the plain fp32 reference.

Tolerances are relative to the reference image's standard deviation and were measured on the
shipped default generator and a random tiny one, batch 1 and 4, noise const/none/random, four
seeds: fp32 agrees to float rounding (< 1e-6); bf16 max error <= 0.23 std (default generator;
0.08 on the tiny one), mean error <= 0.014 std. The bounds below leave some headroom.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model.stylegan2 import (
    Generator,
    load_generator,
    prepare_for_inference,
    setup_filter,
    upsample2d,
    upsample_bilinear_fir,
    upsample_is_bilinear,
    upsample_matrix,
)
from test_stylegan2 import tiny_generator

DEFAULT_GENERATOR = Path(__file__).resolve().parents[1] / "resources" / "default" / "generator"
TOLERANCE = {torch.float32: (1e-4, 1e-5), torch.bfloat16: (0.3, 0.02)}  # (max, mean) error / image std


@pytest.fixture(scope="module")
def generators() -> dict[str, Generator]:
    return {
        # 32 px with 8..32 channels: both batch-1 strategies (scale the weight / the activations)
        "tiny": tiny_generator(32, seed=3, channel_base=256, channel_max=32).requires_grad_(False),
        "default": load_generator(DEFAULT_GENERATOR).requires_grad_(False),
    }


def assert_close(out: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    max_rel, mean_rel = TOLERANCE[dtype]
    scale = float(ref.std())
    err = (out - ref).abs()
    assert out.dtype == torch.float32 and out.shape == ref.shape, what
    assert float(err.max()) <= max_rel * scale, (what, float(err.max()) / scale)
    assert float(err.mean()) <= mean_rel * scale, (what, float(err.mean()) / scale)


@pytest.mark.parametrize("name", ["tiny", "default"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_path_matches_reference(generators, name, dtype) -> None:
    G = generators[name]
    fast = prepare_for_inference(G, dtype=dtype)
    if name == "tiny":
        assert {c.fold_weights for c in fast.convs} == {True, False}
    torch.manual_seed(0)
    ws = G.mapping(torch.randn(4, G.z_dim), truncation_psi=0.7)
    with torch.no_grad():
        for mode in ("const", "none", "random"):
            for batch in (1, 4):  # the live case and the render's batches
                torch.manual_seed(5)  # random mode: both draw the same per-layer noise in the same order
                ref = G.synthesis(ws[:batch], noise_mode=mode)
                torch.manual_seed(5)
                out = fast.synthesis(ws[:batch], noise_mode=mode)
                assert_close(out, ref, dtype, f"{name} {dtype} {mode} batch {batch}")


def test_noise_modes_keep_their_meaning(generators) -> None:
    G = generators["tiny"]  # noise strength 0.3 on every layer
    fast = prepare_for_inference(G)
    ws = G.mapping(torch.randn(1, G.z_dim)).detach()
    with torch.no_grad():
        const1, const2 = fast.synthesis(ws, "const"), fast.synthesis(ws, "const")
        none = fast.synthesis(ws, "none")
        rand1, rand2 = fast.synthesis(ws, "random"), fast.synthesis(ws, "random")
        ref_const, ref_none = G.synthesis(ws, "const"), G.synthesis(ws, "none")
    assert torch.equal(const1, const2)  # const: the stored noise, the same every frame
    assert (rand1 - rand2).abs().max() > 0.05 * float(ref_const.std())  # random: fresh every call
    # The noise term is there (const differs from none) and is the reference's.
    assert (const1 - none).abs().mean() > 0.2 * (ref_const - ref_none).abs().mean()
    assert_close(const1 - none, ref_const - ref_none, torch.bfloat16, "noise term")


def test_const_noise_is_precomputed_into_the_bias_map(generators) -> None:
    G = generators["tiny"]
    fast = prepare_for_inference(G, torch.float32)
    layer = G.synthesis.b16.conv1
    conv = next(c for c in fast.convs if c.resolution == 16 and c.up == 1)
    expect = (layer.noise_const * layer.noise_strength + layer.bias[:, None, None]) * 2**0.5
    assert conv.bias_const.shape == (1, layer.out_channels, 16, 16)
    assert torch.allclose(conv.bias_const[0], expect, atol=1e-6)


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 1), (1, 2, 1), (1, 2, 5, 1, 1, 3)])
def test_upsample_matrix_is_upsample2d(taps) -> None:
    x = torch.randn(2, 3, 8, 8)
    a = upsample_matrix(taps, 8)
    assert a.shape == (16, 8)
    assert torch.allclose(a @ x @ a.t(), upsample2d(x, setup_filter(taps)), atol=1e-5)


def test_skip_image_upsampling_by_interpolation_is_the_fir() -> None:
    # NVIDIA's [1, 3, 3, 1] filter is bilinear interpolation with the borders scaled; other taps
    # are not, and keep the exact matrices.
    assert upsample_is_bilinear((1, 3, 3, 1))
    assert not any(upsample_is_bilinear(t) for t in [(1, 1), (1, 2, 1), (1, 2, 5, 1, 1, 3), (1, 3, 3, 2)])
    for shape in [(2, 3, 64, 64), (1, 3, 64, 112), (1, 3, 5, 9)]:  # square, widened, odd
        x = torch.randn(*shape)
        want = upsample2d(x, setup_filter((1, 3, 3, 1)))
        got = upsample_bilinear_fir(x.clone())
        assert got.shape == want.shape
        assert torch.allclose(got, want, atol=1e-5)


def test_batched_uint8_conversion_is_the_per_frame_one() -> None:
    from vjapp.engine.frames import to_uint8, to_uint8_batch

    x = torch.randn(4, 3, 20, 12) * 0.8
    x[0, 0, 0, 0], x[1, 1, 1, 1], x[2, 2, 2, 2] = float("nan"), float("inf"), -float("inf")
    expect = [to_uint8(img) for img in x.clone()]
    for layout in (torch.contiguous_format, torch.channels_last):
        frames = to_uint8_batch(x.clone().contiguous(memory_format=layout))
        assert len(frames) == 4
        for got, want in zip(frames, expect):
            assert got.shape == (20, 12, 3) and got.dtype == want.dtype and got.flags["C_CONTIGUOUS"]
            assert (got == want).all()


@pytest.mark.parametrize("name", ["tiny", "default"])
def test_traced_path_is_the_eager_fast_path(generators, name) -> None:
    G = generators[name]
    eager = prepare_for_inference(G)
    traced = prepare_for_inference(G, jit=True)
    ws = G.mapping(torch.randn(4, G.z_dim), truncation_psi=0.7).detach()
    for batch in (1, 4):
        for mode in ("const", "none", "random"):
            traced.synthesis(ws[:batch], mode)  # the first call traces (and draws noise while tracing)
            torch.manual_seed(2)
            want = eager.synthesis(ws[:batch], mode)
            torch.manual_seed(2)
            got = traced.synthesis(ws[:batch], mode)
            assert torch.allclose(got, want, atol=1e-6), (name, batch, mode)
    assert {key[:2] for key in traced._traced} == {(b, m) for b in (1, 4) for m in ("const", "none", "random")}
    # a widened frame (aspect != 1) is its own trace, equal to the eager one
    wide = traced.synthesis(ws[:1], "const", aspect=16 / 9)
    assert wide.shape[-2] == G.img_resolution and wide.shape[-1] > G.img_resolution
    assert torch.allclose(wide, eager.synthesis(ws[:1], "const", aspect=16 / 9), atol=1e-6)
    assert len(traced._traced) == 7
    r1, r2 = traced.synthesis(ws[:1], "random"), traced.synthesis(ws[:1], "random")
    assert (r1 - r2).abs().max() > 1e-3  # the trace draws fresh noise on every call
    traced.to("cpu")
    assert traced._traced == {}  # moved or cast: traces holding the old tensors are dropped


def test_a_failed_trace_falls_back_to_the_eager_path(generators, monkeypatch, caplog) -> None:
    G = generators["tiny"]
    traced = prepare_for_inference(G, jit=True)

    def broken(*args, **kwargs):
        raise RuntimeError("no TorchScript here")

    monkeypatch.setattr(torch.jit, "trace", broken)
    ws = G.mapping(torch.randn(1, G.z_dim)).detach()
    out = traced.synthesis(ws)
    assert torch.equal(out, prepare_for_inference(G).synthesis(ws))
    assert traced.jit is False and "no TorchScript here" in caplog.text


def test_cuda_graphs_are_ignored_off_cuda(generators) -> None:
    G = generators["tiny"]
    graphed = prepare_for_inference(G, torch.float32, graphs=True)
    eager = prepare_for_inference(G, torch.float32)
    ws = G.mapping(torch.randn(2, G.z_dim)).detach()
    assert torch.equal(graphed.synthesis(ws), eager.synthesis(ws))
    assert graphed._graphed == {}  # nothing captured on a CPU


@pytest.mark.requires_cuda
def test_cuda_graph_replay_is_the_eager_fast_path(generators) -> None:
    """On CUDA the show replays a captured graph per (batch, noise mode, aspect): the same images
    as the eager fast path, a fresh input every call, fresh noise in random mode."""
    G = generators["default"].to("cuda")
    eager = prepare_for_inference(G, torch.float16)
    graphed = prepare_for_inference(G, torch.float16, graphs=True)
    gen = torch.Generator().manual_seed(4)
    for batch in (1, 4):
        for mode in ("const", "none"):
            for _ in range(3):  # the first call captures, the next ones replay with new inputs
                ws = G.mapping(torch.randn(batch, G.z_dim, generator=gen).cuda(), truncation_psi=0.7)
                got, want = graphed.synthesis(ws, mode), eager.synthesis(ws, mode)
                assert torch.allclose(got, want, atol=1e-3), (batch, mode)
    wide = graphed.synthesis(ws[:1], "const", aspect=16 / 9)
    assert torch.allclose(wide, eager.synthesis(ws[:1], "const", aspect=16 / 9), atol=1e-3)
    r1, r2 = graphed.synthesis(ws[:1], "random"), graphed.synthesis(ws[:1], "random")
    assert (r1 - r2).abs().max() > 1e-3
    assert graphed.graphs and len(graphed._graphed) == 6
    graphed.to("cpu")
    assert graphed._graphed == {}
