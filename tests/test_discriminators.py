"""The image (StyleGAN2 residual) and video (3D patch) discriminators: shapes, math, gradients, files."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from model.discriminators import (
    Discriminator,
    DiscriminatorConfig,
    MinibatchStdLayer,
    VideoDiscriminator,
    VideoDiscriminatorConfig,
    downsample2d,
    downsample_conv2d,
    load_discriminator,
    load_video_discriminator,
    save_discriminator,
    save_video_discriminator,
)
from model.formats import CheckpointError
from model.stylegan2 import setup_filter
import reference_nvidia as ref


def tiny_d(resolution: int = 32, **kw) -> Discriminator:
    torch.manual_seed(0)
    return Discriminator(DiscriminatorConfig(resolution=resolution, channel_base=256, channel_max=32, **kw))


def tiny_vd(**kw) -> VideoDiscriminator:
    torch.manual_seed(0)
    kw.setdefault("channels", (8, 16, 16))
    return VideoDiscriminator(VideoDiscriminatorConfig(**kw))


# -- image discriminator ---------------------------------------------------------------------------


@pytest.mark.parametrize("resolution", [16, 32])
def test_discriminator_outputs_one_finite_logit_per_image(resolution: int) -> None:
    D = tiny_d(resolution)
    x = torch.rand(4, 3, resolution, resolution) * 2 - 1
    y = D(x)
    assert y.shape == (4,)
    assert y.dtype == torch.float32
    assert torch.isfinite(y).all()
    # Each sample's logit depends on the others only through minibatch-stddev: not identical.
    assert y.std() > 0


def test_discriminator_gradients_reach_every_parameter_and_the_input() -> None:
    D = tiny_d(16)
    x = (torch.rand(4, 3, 16, 16) * 2 - 1).requires_grad_(True)
    (grad_x,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
    assert grad_x.shape == x.shape and grad_x.abs().sum() > 0
    # R1's double backward: the penalty's gradient reaches every weight.
    grad_x.square().sum().backward()
    missing = [n for n, p in D.named_parameters() if n.endswith("weight") and (p.grad is None or p.grad.abs().sum() == 0)]
    assert not missing


def test_discriminator_state_dict_uses_nvidia_names() -> None:
    keys = set(tiny_d(16).state_dict())
    for name in ("b16.fromrgb.weight", "b16.fromrgb.bias", "b16.conv0.weight", "b16.conv1.weight", "b16.skip.weight",
                 "b8.conv0.bias", "b4.conv.weight", "b4.fc.weight", "b4.fc.bias", "b4.out.weight", "b4.out.bias"):
        assert name in keys, name
    assert "b8.fromrgb.weight" not in keys  # resnet: only the first block reads the image
    assert "b16.skip.bias" not in keys  # the residual branch has no bias


def test_channels_follow_channel_base_and_max() -> None:
    D = Discriminator(DiscriminatorConfig(resolution=64, channel_base=512, channel_max=16))
    assert D.b64.fromrgb.weight.shape == (8, 3, 1, 1)  # 512 // 64
    assert D.b64.conv1.weight.shape == (16, 8, 3, 3)  # 512 // 32 = 16
    assert D.b4.fc.weight.shape == (16, 16 * 4 * 4)


def test_discriminator_rejects_wrong_images() -> None:
    D = tiny_d(16)
    with pytest.raises(ValueError, match=r"\[N, 3, 16, 16\]"):
        D(torch.zeros(2, 3, 32, 32))
    with pytest.raises(ValueError, match="floating"):
        D(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="torch.Tensor"):
        D([[0.0]])  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs, match", [
    ({"resolution": 48}, "power of two"),
    ({"resolution": 16, "channel_base": 8}, "0 channels"),
    ({"resolution": 16, "architecture": "skip"}, "architecture"),
    ({"resolution": 16, "conv_clamp": -1.0}, "conv_clamp"),
    ({"resolution": 16, "mbstd_group_size": 0}, "mbstd_group_size"),
])
def test_discriminator_config_rejects_bad_values(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DiscriminatorConfig(**kwargs)


def test_minibatch_stddev_matches_direct_computation_and_takes_any_batch() -> None:
    torch.manual_seed(1)
    x = torch.randn(4, 6, 3, 3)
    y = MinibatchStdLayer(group_size=2, num_channels=1)(x)
    assert y.shape == (4, 7, 3, 3)
    # NVIDIA groups samples i and i + N/G: here (0, 2) and (1, 3).
    for members in ((0, 2), (1, 3)):
        expected = x[list(members)].std(dim=0, unbiased=False).mean()
        for i in members:
            assert torch.allclose(y[i, 6], expected.expand(3, 3), atol=1e-5)
    # A batch of 3 with group size 4 uses groups of 3 (the whole batch) instead of failing.
    assert MinibatchStdLayer(4)(torch.randn(3, 6, 3, 3)).shape == (3, 7, 3, 3)
    assert MinibatchStdLayer(4)(torch.randn(1, 6, 3, 3))[:, 6].abs().max() < 1e-3  # one sample: zero spread


def test_fir_downsampling_matches_nvidia_reference() -> None:
    torch.manual_seed(2)
    f = setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 5, 12, 12)
    expected = ref.upfirdn2d(x, f, down=2, padding=[1, 1, 1, 1])  # NVIDIA downsample2d padding for 4 taps
    assert torch.allclose(downsample2d(x, f), expected, atol=1e-6)
    # conv2d_resample(down=2, padding=1) for a 3x3 kernel: FIR with pad 2, then a stride-2 conv.
    w = torch.randn(7, 5, 3, 3)
    expected = F.conv2d(ref.upfirdn2d(x, f, padding=[2, 2, 2, 2]), w, stride=2)
    got = downsample_conv2d(x, w, f, padding=1)
    assert got.shape == (2, 7, 6, 6)
    assert torch.allclose(got, expected, atol=1e-5)
    # 1x1 kernel: down-sample first, then convolve.
    w1 = torch.randn(7, 5, 1, 1)
    expected = F.conv2d(ref.upfirdn2d(x, f, down=2, padding=[1, 1, 1, 1]), w1)
    assert torch.allclose(downsample_conv2d(x, w1, f, padding=0), expected, atol=1e-5)


def test_discriminator_learns_to_separate_two_distributions() -> None:
    """A few Adam steps on the logistic loss make D prefer the 'real' set: the math trains."""
    D = tiny_d(16)
    opt = torch.optim.Adam(D.parameters(), lr=0.002, betas=(0.0, 0.99))
    gen = torch.Generator().manual_seed(3)

    def real(n: int) -> torch.Tensor:  # smooth bright images
        return (0.5 + 0.1 * torch.randn(n, 3, 1, 1, generator=gen)).expand(n, 3, 16, 16).contiguous()

    def fake(n: int) -> torch.Tensor:  # noise
        return torch.randn(n, 3, 16, 16, generator=gen) * 0.5

    for _ in range(15):
        loss = F.softplus(D(fake(4))).mean() + F.softplus(-D(real(4))).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert D(real(8)).mean() > D(fake(8)).mean() + 1.0


def test_discriminator_save_load_round_trip(tmp_path) -> None:
    D = tiny_d(16, conv_clamp=256.0)
    x = torch.rand(4, 3, 16, 16) * 2 - 1
    save_discriminator(tmp_path / "D", D, metadata={"step": 3})
    D2 = load_discriminator(tmp_path / "D")
    assert D2.config == D.config
    assert not D2.training
    D.eval()
    assert torch.equal(D(x), D2(x))
    doc = json.loads((tmp_path / "D.json").read_text())
    assert doc["kind"] == "stylegan2_discriminator" and doc["metadata"] == {"step": 3}
    with pytest.raises(CheckpointError, match="expected 'video_patch_discriminator'"):
        load_video_discriminator(tmp_path / "D")


# -- video discriminator ---------------------------------------------------------------------------


@pytest.mark.parametrize("frames, size, strides", [(8, 32, (1, 2, 2)), (4, 16, (1, 1, 2)), (1, 8, (1, 1, 1)),
                                                   (5, 24, (2, 2, 2))])
def test_video_discriminator_patch_map_shape(frames: int, size: int, strides: tuple) -> None:
    D = tiny_vd(time_strides=strides)
    clips = torch.rand(2, 3, frames, size, size + 8) * 2 - 1
    y = D(clips)
    t, h, w = D.config.output_shape(frames, size, size + 8)
    assert y.shape == (2, 1, t, h, w)
    assert (h, w) == (size // 8, (size + 8) // 8)
    assert torch.isfinite(y).all()


def test_video_discriminator_sees_motion() -> None:
    """Patch logits depend on the order of frames (3D convs mix time), unlike a per-frame D."""
    D = tiny_vd()
    torch.manual_seed(4)
    clips = torch.rand(1, 3, 8, 16, 16) * 2 - 1
    assert not torch.allclose(D(clips), D(clips.flip(2)))


def test_video_discriminator_gradients() -> None:
    D = tiny_vd()
    clips = (torch.rand(2, 3, 4, 16, 16) * 2 - 1).requires_grad_(True)
    (g,) = torch.autograd.grad(D(clips).mean(), clips, create_graph=True)
    assert g.shape == clips.shape and g.abs().sum() > 0
    g.square().sum().backward()
    # Every weight shapes the input gradient (biases cannot, except through the activations).
    weights = [p for n, p in D.named_parameters() if n.endswith("weight")]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in weights)


def test_video_discriminator_rejects_bad_clips() -> None:
    D = tiny_vd()
    with pytest.raises(ValueError, match=r"\[N, 3, T, H, W\]"):
        D(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match="at least 8x8"):
        D(torch.zeros(1, 3, 4, 4, 4))
    with pytest.raises(ValueError, match="time_strides"):
        VideoDiscriminatorConfig(channels=(8, 16), time_strides=(1,))
    with pytest.raises(ValueError, match="kernel_time"):
        VideoDiscriminatorConfig(kernel_time=2)


def test_video_discriminator_save_load_round_trip(tmp_path) -> None:
    D = tiny_vd(time_strides=(1, 2, 1), conv_clamp=256)
    clips = torch.rand(2, 3, 4, 16, 16) * 2 - 1
    save_video_discriminator(tmp_path / "vd", D)
    D2 = load_video_discriminator(tmp_path / "vd.json")
    assert D2.config == D.config and D2.config.time_strides == (1, 2, 1)
    assert torch.equal(D(clips), D2(clips))
    with pytest.raises(CheckpointError, match="expected 'stylegan2_discriminator'"):
        load_discriminator(tmp_path / "vd")
