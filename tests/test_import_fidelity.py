"""Imported NVIDIA / rosinality generators draw the same images as literal re-implementations.

The references (tests/reference_nvidia.py, tests/reference_rosinality.py) follow each project's
own module structure, names and op definitions, share no code with model/stylegan2.py, and are
filled with random non-trivial values (non-zero biases and noise strengths) so no term can hide.
"""

from __future__ import annotations

import argparse

import pytest
import torch

import reference_nvidia as ref_nv
import reference_rosinality as ref_ro
from model.formats import CheckpointError
from model.import_stylegan import (
    UnsupportedCheckpoint,
    channel_params_for,
    config_from_nvidia_kwargs,
    generator_from_nvidia,
    generator_from_rosinality,
)
from model.stylegan2 import load_generator, save_generator

TOL = 1e-3  # max |difference| on the image, whose values are O(1)
PSI, CUTOFF = 0.7, 4


def nvidia_reference(resolution: int = 32, seed: int = 1, conv_clamp: float | None = None,
                     channel_base: int = 256, channel_max: int = 32) -> ref_nv.Generator:
    torch.manual_seed(seed)
    G = ref_nv.Generator(
        z_dim=24, c_dim=0, w_dim=40, img_resolution=resolution, img_channels=3,
        mapping_kwargs=dict(num_layers=3, layer_features=36),
        synthesis_kwargs=dict(channel_base=channel_base, channel_max=channel_max, num_fp16_res=2,
                              conv_clamp=conv_clamp, architecture="skip"),
    )
    return ref_nv.randomize_(G, seed).eval()


def small_rosinality_table(multiplier: int) -> dict[int, int]:
    """rosinality's table scaled down 16x: 4..32 -> 32, 64 -> 16*m, 128 -> 8*m."""
    return {4: 32, 8: 32, 16: 32, 32: 32, 64: 16 * multiplier, 128: 8 * multiplier}


def rosinality_reference(size: int = 64, multiplier: int = 2, seed: int = 2, channels=None) -> ref_ro.Generator:
    torch.manual_seed(seed)
    G = ref_ro.Generator(size, style_dim=32, n_mlp=3, channel_multiplier=multiplier,
                         channels=channels if channels is not None else small_rosinality_table(multiplier))
    return ref_ro.randomize_(G, seed).eval()


def assert_images_close(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.shape == b.shape
    assert float(a.std()) > 0.1, "reference image is nearly constant; the comparison would prove nothing"
    diff = float((a - b).abs().max())
    assert diff <= TOL, f"max |difference| {diff:.2e} > {TOL}"


# --------------------------------------------------------------------------------------------
# NVIDIA


@pytest.mark.parametrize(
    "resolution, conv_clamp, channel_base, channel_max",
    [(32, None, 256, 32), (64, 0.8, 1024, 32), (16, 256.0, 32768, 48)],
)
def test_nvidia_import_reproduces_reference(resolution, conv_clamp, channel_base, channel_max) -> None:
    ref = nvidia_reference(resolution, conv_clamp=conv_clamp, channel_base=channel_base, channel_max=channel_max)
    G = generator_from_nvidia(ref.init_kwargs, ref.state_dict())
    assert G.num_ws == ref.num_ws and G.config.conv_clamp == conv_clamp
    assert G.config.mapping_hidden_dim == 36 and G.config.mapping_layers == 3
    z = torch.randn(3, 24, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ws_ref = ref.mapping(z, None, truncation_psi=PSI, truncation_cutoff=CUTOFF)
        ws = G.mapping(z, truncation_psi=PSI, truncation_cutoff=CUTOFF)
        assert float((ws - ws_ref).abs().max()) <= 1e-5 * float(ws_ref.abs().max())
        for mode in ("const", "none"):
            assert_images_close(ref.synthesis(ws_ref, noise_mode=mode), G.synthesis(ws_ref, noise_mode=mode))
        assert_images_close(ref(z, None, PSI, CUTOFF, noise_mode="const"), G(z, PSI, CUTOFF, noise_mode="const"))
        # The live path agrees too (fp32 fast module).
        from model.stylegan2 import prepare_for_inference

        fast = prepare_for_inference(G, torch.float32)
        assert_images_close(ref.synthesis(ws_ref[:1], noise_mode="const"), fast.synthesis(ws_ref[:1], "const"))


def test_nvidia_import_survives_native_round_trip(tmp_path) -> None:
    ref = nvidia_reference(16)
    save_generator(tmp_path / "g", generator_from_nvidia(ref.init_kwargs, ref.state_dict()))
    G = load_generator(tmp_path / "g")
    ws = ref.mapping(torch.randn(2, 24), None, PSI, CUTOFF).detach()
    with torch.no_grad():
        assert_images_close(ref.synthesis(ws, noise_mode="const"), G.synthesis(ws, "const"))


def test_nvidia_stylegan3_layout_kwargs() -> None:
    """stylegan3's networks_stylegan2.Generator takes synthesis kwargs flat, not nested."""
    kwargs = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3,
                  mapping_kwargs={"num_layers": 2}, channel_base=16384, channel_max=512,
                  num_fp16_res=4, conv_clamp=256, fused_modconv_default="inference_only")
    cfg = config_from_nvidia_kwargs(kwargs)
    assert (cfg.channel_base, cfg.mapping_layers, cfg.conv_clamp, cfg.resolution) == (16384, 2, 256.0, 256)


@pytest.mark.parametrize(
    "synthesis, layout, expected",
    [
        # stylegan3's train.py --cfg=stylegan2 stores no conv_clamp; SynthesisBlock's default is 256.
        (dict(channel_base=16384, channel_max=512, fused_modconv_default="inference_only"), "flat", 256.0),
        # ... and with --fp32 it stores conv_clamp=None explicitly.
        (dict(channel_base=16384, channel_max=512, num_fp16_res=0, conv_clamp=None), "flat", None),
        # stylegan2-ada-pytorch's SynthesisBlock defaults to None (its train.py always stores a value).
        (dict(channel_base=16384, channel_max=512), "nested", None),
        (dict(channel_base=16384, channel_max=512, conv_clamp=256), "nested", 256.0),
    ],
)
def test_nvidia_missing_conv_clamp_takes_the_default_of_its_code(synthesis, layout, expected) -> None:
    kwargs = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=256, img_channels=3, mapping_kwargs={"num_layers": 8})
    if layout == "flat":
        kwargs.update(synthesis)
    else:
        kwargs["synthesis_kwargs"] = synthesis
    assert config_from_nvidia_kwargs(kwargs).conv_clamp == expected


def stylegan3_repo_reference(seed: int = 3) -> ref_nv.StyleGAN3RepoGenerator:
    """What the stylegan3 repository's ``train.py --cfg=stylegan2`` builds without ``--fp32``:
    synthesis arguments flat, no ``conv_clamp`` among them, every block clamping at 256."""
    torch.manual_seed(seed)
    G = ref_nv.StyleGAN3RepoGenerator(z_dim=24, c_dim=0, w_dim=40, img_resolution=16, img_channels=3,
                                      mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=32,
                                      fused_modconv_default="inference_only")
    ref_nv.randomize_(G, seed)
    with torch.no_grad():
        G.synthesis.b8.conv1.bias[:2] += 200  # (x + 200) * sqrt(2) > 256: the clamp acts on two channels
    return G.eval()


def test_stylegan3_repo_pickle_without_conv_clamp_clamps_at_256(tmp_path) -> None:
    nvidia_pickle = pytest.importorskip("nvidia_pickle")
    safe_pickle = pytest.importorskip("model.safe_pickle")
    ref = stylegan3_repo_reference()
    assert "conv_clamp" not in ref.init_kwargs and "synthesis_kwargs" not in ref.init_kwargs
    path = nvidia_pickle.dump_nvidia_pickle(tmp_path / "network-snapshot.pkl", nvidia_pickle.snapshot(ref, G_ema=ref))
    record = safe_pickle.load_nvidia_pickle(path)["G_ema"]
    G = generator_from_nvidia(safe_pickle.record_init_kwargs(record), safe_pickle.record_state_dict(record),
                              class_name=record.module_name)
    z = torch.randn(2, 24, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        expected = ref(z, None, PSI, CUTOFF, noise_mode="const")
        # Negative control: the same weights without a clamp draw another picture, so the clamp is exercised.
        unclamped = generator_from_nvidia({**ref.init_kwargs, "conv_clamp": None}, ref.state_dict())
        assert float((unclamped(z, PSI, CUTOFF, noise_mode="const") - expected).abs().max()) > 100 * TOL
        assert_images_close(expected, G(z, PSI, CUTOFF, noise_mode="const"))
    assert G.config.conv_clamp == 256.0


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(c_dim=10), "conditional"),
        (dict(synthesis_kwargs=dict(architecture="resnet")), "architecture 'resnet'"),
        (dict(synthesis_kwargs=dict(architecture="orig")), "architecture 'orig'"),
        (dict(synthesis_kwargs=dict(use_noise=False)), "use_noise"),
        (dict(mapping_kwargs=dict(w_avg_beta=None)), "w_avg"),
        (dict(synthesis_kwargs=dict(weird_option=3)), "weird_option"),
        (dict(img_resolution=48), "resolution"),
    ],
)
def test_nvidia_unsupported_generators_are_refused(change, message) -> None:
    ref = nvidia_reference(8)
    kwargs = dict(ref.init_kwargs)
    kwargs.update(change)
    with pytest.raises(UnsupportedCheckpoint, match=message):
        generator_from_nvidia(kwargs, ref.state_dict())
    assert issubclass(UnsupportedCheckpoint, ValueError)


def test_nvidia_stylegan2_state_with_stylegan3_evidence_is_refused() -> None:
    """StyleGAN3 kwargs, tensors or class name send a network to the StyleGAN3 importer (which a
    StyleGAN2 network does not fit); the StyleGAN2 config reader refuses StyleGAN3 arguments."""
    ref = nvidia_reference(8)
    state = dict(ref.state_dict())
    state["synthesis.input.affine.weight"] = torch.zeros(4, 40)
    with pytest.raises(UnsupportedCheckpoint, match="StyleGAN3 init_kwargs .*synthesis_kwargs"):
        generator_from_nvidia(ref.init_kwargs, state)
    with pytest.raises(UnsupportedCheckpoint, match="StyleGAN3"):
        generator_from_nvidia({**ref.init_kwargs, "magnitude_ema_beta": 0.999}, ref.state_dict())
    with pytest.raises(UnsupportedCheckpoint, match="StyleGAN3"):
        config_from_nvidia_kwargs(ref.init_kwargs, class_name="training.networks_stylegan3")
    with pytest.raises(UnsupportedCheckpoint, match="StyleGAN3"):
        config_from_nvidia_kwargs({**ref.init_kwargs, "conv_kernel": 1})


def test_nvidia_bad_state_raises_checkpoint_error() -> None:
    ref = nvidia_reference(8)
    state = dict(ref.state_dict())
    bad = dict(state)
    bad["synthesis.b8.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(CheckpointError, match=r"synthesis.b8.conv1.weight has shape"):
        generator_from_nvidia(ref.init_kwargs, bad)
    missing = {k: v for k, v in state.items() if k != "mapping.w_avg"}
    with pytest.raises(CheckpointError, match="missing"):
        generator_from_nvidia(ref.init_kwargs, missing)
    nan = dict(state)
    nan["mapping.fc1.bias"] = torch.full_like(state["mapping.fc1.bias"], float("nan"))
    with pytest.raises(CheckpointError, match="NaN"):
        generator_from_nvidia(ref.init_kwargs, nan)


def test_nvidia_pickle_end_to_end(tmp_path) -> None:
    """reference net -> NVIDIA-layout .pkl -> restricted unpickler -> import -> same images."""
    nvidia_pickle = pytest.importorskip("nvidia_pickle")
    safe_pickle = pytest.importorskip("model.safe_pickle")
    ref = nvidia_reference(32)
    path = nvidia_pickle.dump_nvidia_pickle(tmp_path / "network-snapshot.pkl", nvidia_pickle.snapshot(ref, G_ema=ref))
    data = safe_pickle.load_nvidia_pickle(path)
    record = data["G_ema"]
    G = generator_from_nvidia(safe_pickle.record_init_kwargs(record), safe_pickle.record_state_dict(record),
                              class_name=record.module_name)
    z = torch.randn(2, 24)
    with torch.no_grad():
        assert_images_close(ref(z, None, PSI, CUTOFF, noise_mode="const"), G(z, PSI, CUTOFF, noise_mode="const"))


# --------------------------------------------------------------------------------------------
# rosinality


def rosinality_ws(ref: ref_ro.Generator, z: torch.Tensor, latent_avg: torch.Tensor) -> torch.Tensor:
    """Their mapping, broadcast to W+, truncated toward latent_avg for the first CUTOFF ws."""
    w = ref.style(z).unsqueeze(1).repeat(1, ref.n_latent, 1)
    w[:, :CUTOFF] = latent_avg + PSI * (w[:, :CUTOFF] - latent_avg)
    return w


@pytest.mark.parametrize("size, multiplier", [(64, 2), (128, 1)])
def test_rosinality_import_reproduces_reference(size, multiplier) -> None:
    ref = rosinality_reference(size, multiplier)
    with torch.no_grad():
        latent_avg = ref.mean_latent(512)[0]
    G = generator_from_rosinality({"g_ema": ref.state_dict(), "latent_avg": latent_avg,
                                   "args": argparse.Namespace(size=size)})
    assert G.num_ws == ref.n_latent and G.img_resolution == size
    assert [G.config.channels(r) for r in G.synthesis.block_resolutions] == [ref.channels[r] for r in G.synthesis.block_resolutions]
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        ws_ref = rosinality_ws(ref, z, latent_avg)
        ws = G.mapping(z, truncation_psi=PSI, truncation_cutoff=CUTOFF)
        assert float((ws - ws_ref).abs().max()) <= 1e-5 * float(ws_ref.abs().max())
        img_ref, _ = ref([ws_ref], input_is_latent=True, randomize_noise=False)
        assert_images_close(img_ref, G.synthesis(ws_ref, noise_mode="const"))
        # Their truncation over all ws is ours without a cutoff.
        img_ref_all, _ = ref([z], truncation=PSI, truncation_latent=latent_avg, randomize_noise=False)
        assert_images_close(img_ref_all, G(z, truncation_psi=PSI, noise_mode="const"))


def test_rosinality_real_channel_table_small_size() -> None:
    """Their unscaled table (512 channels up to 32 px) maps to channel_base/channel_max."""
    ref = rosinality_reference(size=8, multiplier=2, channels={})  # {} -> their real table
    G = generator_from_rosinality({"g_ema": ref.state_dict(), "latent_avg": torch.zeros(32)})
    assert G.config.channel_max == 512
    ws = G.mapping(torch.randn(1, 32)).detach()
    with torch.no_grad():
        img_ref, _ = ref([ws], input_is_latent=True, randomize_noise=False)
        assert_images_close(img_ref, G.synthesis(ws, "const"))


def test_rosinality_upsampling_weights_need_no_flip() -> None:
    """Negative control: spatially flipping the up-sampling conv weights breaks the match,
    so the test above would catch a missing or superfluous flip."""
    ref = rosinality_reference(32, 2)
    state = dict(ref.state_dict())
    for i in range(0, 6, 2):
        state[f"convs.{i}.conv.weight"] = state[f"convs.{i}.conv.weight"].flip([3, 4])
    G = generator_from_rosinality({"g_ema": state, "latent_avg": torch.zeros(32)})
    ws = G.mapping(torch.randn(2, 32)).detach()
    with torch.no_grad():
        img_ref, _ = ref([ws], input_is_latent=True, randomize_noise=False)
        assert float((img_ref - G.synthesis(ws, "const")).abs().max()) > 100 * TOL


def test_rosinality_without_latent_avg_estimates_w_avg() -> None:
    ref = rosinality_reference(16, 2)
    G = generator_from_rosinality({"g_ema": ref.state_dict()}, n_mean_latent=4096)
    with torch.no_grad():
        mean = ref.mean_latent(8192)[0]
    with torch.no_grad():
        spread = float(ref.style(torch.randn(256, 32)).std(0).mean())
    assert float((G.mapping.w_avg - mean).abs().max()) < 0.1 * spread


def test_rosinality_end_to_end_through_weights_only_load(tmp_path) -> None:
    safe_pickle = pytest.importorskip("model.safe_pickle")
    ref = rosinality_reference(32, 2)
    latent_avg = torch.randn(32)
    path = tmp_path / "550000.pt"
    torch.save({"g_ema": ref.state_dict(), "latent_avg": latent_avg, "args": argparse.Namespace(size=32)}, path)
    G = generator_from_rosinality(safe_pickle.load_rosinality_checkpoint(path))
    assert torch.equal(G.mapping.w_avg, latent_avg)
    ws = G.mapping(torch.randn(2, 32), PSI, CUTOFF).detach()
    with torch.no_grad():
        img_ref, _ = ref([ws], input_is_latent=True, randomize_noise=False)
        assert_images_close(img_ref, G.synthesis(ws, "const"))


@pytest.mark.parametrize("with_args", [True, False])
def test_rosinality_swagan_is_refused(tmp_path, with_args: bool) -> None:
    """A SWAGAN g_ema (wavelet to-RGB layers, 12 channels) must not pass for a 12-channel StyleGAN2."""
    safe_pickle = pytest.importorskip("model.safe_pickle")
    torch.manual_seed(4)
    ref = ref_ro.randomize_(ref_ro.SWAGANGenerator(32, style_dim=32, n_mlp=3, channels={4: 32, 8: 32, 16: 16}), 4)
    ckpt = {"g_ema": ref.state_dict(), "latent_avg": torch.zeros(32)}
    if with_args:  # train.py saves its arguments; a bare g_ema is told by its wavelet buffers alone
        ckpt["args"] = argparse.Namespace(arch="swagan", size=32, latent=32, n_mlp=3, channel_multiplier=2)
    path = tmp_path / "swagan.pt"
    torch.save(ckpt, path)
    with pytest.raises(UnsupportedCheckpoint, match=r"SWAGAN.*--arch swagan.*only .*StyleGAN2") as info:
        generator_from_rosinality(safe_pickle.load_rosinality_checkpoint(path))
    assert "\n" not in str(info.value)


def test_channel_tables() -> None:
    def table(size: int, m: int) -> dict[int, int]:
        full = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * m, 128: 128 * m, 256: 64 * m, 512: 32 * m, 1024: 16 * m}
        return {r: c for r, c in full.items() if r <= size}

    assert channel_params_for(table(1024, 2)) == (32768, 512)
    assert channel_params_for(table(256, 1)) == (16384, 512)
    assert channel_params_for(table(32, 4)) == (32768, 512)
    with pytest.raises(UnsupportedCheckpoint, match="channel table"):
        channel_params_for(table(256, 4))  # 512 at 32 px but 1024 at 64 px


def test_rosinality_bad_checkpoints() -> None:
    ref = rosinality_reference(16, 2)
    with pytest.raises(CheckpointError, match="g_ema"):
        generator_from_rosinality({"g": ref.state_dict()})
    state = dict(ref.state_dict())
    del state["convs.1.noise.weight"]
    with pytest.raises(CheckpointError, match="convs.1.noise.weight"):
        generator_from_rosinality({"g_ema": state})
    state = dict(ref.state_dict())
    state["convs.0.conv.blur.kernel"] = torch.ones(4, 4)
    with pytest.raises(UnsupportedCheckpoint, match="blur kernel"):
        generator_from_rosinality({"g_ema": state})
    with pytest.raises(UnsupportedCheckpoint, match=r"args\.arch='mystery' is not supported"):
        generator_from_rosinality({"g_ema": ref.state_dict(), "args": argparse.Namespace(arch="mystery")})
    state = dict(ref.state_dict())
    state["style.2.weight"] = state["style.2.weight"].clone().fill_(float("inf"))
    with pytest.raises(CheckpointError, match="NaN or Inf"):
        generator_from_rosinality({"g_ema": state, "latent_avg": torch.zeros(32)})
