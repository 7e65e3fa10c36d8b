"""F_a, E_a and the recurrent predictor: shapes, gradients, layer groups, step == unroll."""

from __future__ import annotations

import pytest
import torch

from model.audio_encoder import AudioEncoder, AudioEncoderConfig, spec_augment
from model.formats import CheckpointError
from model.latent_rnn import (
    LatentRNN,
    LatentRNNConfig,
    default_layer_groups,
    load_latent_rnn,
    save_latent_rnn,
    validate_layer_groups,
)
from model.sound_inversion import (
    SoundInversionConfig,
    SoundInversionEncoder,
    load_sound_inversion,
    save_sound_inversion,
)

N_MELS = 16
TINY_CHANNELS = (8, 16)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# --- F_a -------------------------------------------------------------------------------------


@pytest.mark.parametrize("frames", [1, 7, 44])
def test_audio_encoder_any_length_gives_unit_vectors(frames):
    fa = AudioEncoder(AudioEncoderConfig(n_mels=N_MELS, embed_dim=24, channels=TINY_CHANNELS)).eval()
    out = fa(torch.rand(3, N_MELS, frames))
    assert out.shape == (3, 24)
    assert torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_audio_encoder_is_resnet18_by_default_and_trains():
    cfg = AudioEncoderConfig()
    assert cfg.channels == (64, 128, 256, 512) and cfg.blocks_per_stage == 2 and cfg.n_mels == 128
    fa = AudioEncoder(AudioEncoderConfig(n_mels=N_MELS, embed_dim=12, channels=TINY_CHANNELS, norm="group"))
    mel = torch.rand(2, N_MELS, 20, requires_grad=True)
    target = torch.nn.functional.normalize(torch.randn(2, 12), dim=-1)
    loss = (1 - (fa(mel) * target).sum(-1)).mean()
    loss.backward()
    assert mel.grad is not None and mel.grad.abs().sum() > 0
    assert all(p.grad is not None for p in fa.parameters())
    # One optimiser step moves the embedding towards the target.
    opt = torch.optim.SGD(fa.parameters(), lr=0.5)
    opt.step()
    with torch.no_grad():
        assert (1 - (fa(mel) * target).sum(-1)).mean() < loss


def test_audio_encoder_rejects_wrong_input():
    fa = AudioEncoder(AudioEncoderConfig(n_mels=N_MELS, embed_dim=8, channels=TINY_CHANNELS))
    with pytest.raises(ValueError, match="n_mels=16"):
        fa(torch.rand(1, 32, 10))
    with pytest.raises(ValueError, match="empty"):
        fa(torch.rand(1, N_MELS, 0))
    with pytest.raises(ValueError, match="norm"):
        AudioEncoderConfig(norm="layer")


def test_spec_augment_masks_bands_and_is_reproducible():
    mel = torch.rand(4, N_MELS, 50) + 1.0  # strictly > 0 so masked cells (0.0) are visible
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = spec_augment(mel, time_masks=2, time_width=10, freq_masks=1, freq_width=4, generator=g1)
    b = spec_augment(mel, time_masks=2, time_width=10, freq_masks=1, freq_width=4, generator=g2)
    assert torch.equal(a, b) and a.shape == mel.shape
    assert torch.all(mel > 0)  # input untouched
    masked = a == 0.0
    assert masked.any()
    # Masks are whole bands: a masked frame is masked in every mel bin, or a mel bin in every frame.
    for item in range(4):
        m = masked[item]
        full_time = m.all(dim=0)  # [T]
        full_freq = m.all(dim=1)  # [n_mels]
        assert torch.equal(m, full_time[None, :] | full_freq[:, None])
        assert int(full_time.sum()) <= 20 and int(full_freq.sum()) <= 4
    unchanged = spec_augment(mel, time_masks=0, freq_masks=0)
    assert torch.equal(unchanged, mel) and unchanged is not mel


# --- layer groups ----------------------------------------------------------------------------


def test_layer_groups_match_paper_and_scale():
    assert default_layer_groups(16) == ((0, 3), (3, 6), (6, 16))  # the paper's coarse/mid/fine
    for num_ws in (14, 16, 18, 3, 8, 30):
        groups = default_layer_groups(num_ws)
        assert len(groups) == 3
        covered = [i for start, stop in groups for i in range(start, stop)]
        assert covered == list(range(num_ws))  # all ws, in order, no overlap, no gap
        assert validate_layer_groups(groups, num_ws) == groups
    assert default_layer_groups(14) == ((0, 3), (3, 5), (5, 14))
    assert default_layer_groups(18) == ((0, 3), (3, 7), (7, 18))
    with pytest.raises(ValueError):
        default_layer_groups(2)


@pytest.mark.parametrize(
    "groups", [((0, 3), (4, 16)), ((0, 3), (2, 16)), ((0, 3), (3, 15)), ((0, 0), (0, 16)), (), ((0, 16, 1),)]
)
def test_bad_layer_groups_are_rejected(groups):
    with pytest.raises(ValueError):
        validate_layer_groups(groups, 16)


# --- E_a -------------------------------------------------------------------------------------


def _tiny_ea(num_ws: int = 6, w_dim: int = 10) -> SoundInversionEncoder:
    return SoundInversionEncoder(SoundInversionConfig(
        n_mels=N_MELS, num_ws=num_ws, w_dim=w_dim, channels=TINY_CHANNELS, head_hidden=16,
    ))


def test_sound_inversion_shapes_small_init_and_gradients():
    ea = _tiny_ea()
    assert ea.groups == default_layer_groups(6)
    mel = torch.rand(2, N_MELS, 30)
    delta = ea(mel)
    assert delta.shape == (2, 6, 10)
    w = torch.randn(2, 6, 10)
    # Untrained: the offset is small next to a typical latent.
    assert delta.abs().mean() < 0.05 * w.abs().mean()
    w_hat = ea.invert(mel, w[:, 0], gain=torch.tensor([1.0, 0.0]))  # [B, w_dim] broadcasts to W+
    assert w_hat.shape == (2, 6, 10)
    assert torch.equal(w_hat[1], w[1, 0].expand(6, 10))  # gain 0 = no change
    delta.pow(2).sum().backward()
    assert all(p.grad is not None for p in ea.parameters())
    with pytest.raises(ValueError):
        ea.invert(mel, torch.zeros(2, 5, 10))


def test_sound_inversion_round_trip(tmp_path):
    ea = _tiny_ea().eval()
    mel = torch.rand(1, N_MELS, 12)
    save_sound_inversion(tmp_path / "ea", ea)
    back = load_sound_inversion(tmp_path / "ea")
    assert back.config == ea.config
    assert torch.equal(back(mel), ea(mel))


# --- predictor -------------------------------------------------------------------------------


def _tiny_rnn(cell: str = "gru", num_ws: int = 6, w_dim: int = 10) -> LatentRNN:
    return LatentRNN(LatentRNNConfig(num_ws=num_ws, w_dim=w_dim, hidden_dim=12, cell=cell))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_step_by_step_equals_unrolled_forward(cell):
    rnn = _tiny_rnn(cell)
    with torch.no_grad():  # make the recurrent part matter, not just the residual
        for block in rnn.blocks:
            block.out.weight.normal_(0, 0.3)
    w0 = torch.randn(2, 6, 10)
    deltas = 0.1 * torch.randn(2, 5, 6, 10)
    ws = rnn(w0, deltas)
    assert ws.shape == (2, 5, 6, 10)
    state = rnn.init_state(2)
    shape = tuple(state.shape)
    w = w0
    for t in range(5):
        w, state = rnn.step(w, deltas[:, t], state)
        assert tuple(state.shape) == shape  # fixed size, no growth
        assert torch.allclose(w, ws[:, t], atol=1e-6)
    # The state carries memory: the same input after different histories gives different outputs.
    w_a, _ = rnn.step(w0, deltas[:, 0], rnn.init_state(2))
    w_b, _ = rnn.step(w0, deltas[:, 0], state)
    assert not torch.allclose(w_a, w_b)


def test_untrained_predictor_is_near_identity_plus_delta_and_trains():
    rnn = _tiny_rnn()
    assert rnn.groups == default_layer_groups(6)
    w0 = torch.randn(3, 6, 10, requires_grad=True)
    delta = 0.5 * torch.randn(3, 6, 10)
    w1, _ = rnn.step(w0, delta, rnn.init_state(3))
    assert torch.allclose(w1, w0 + delta, atol=0.1)
    ws = rnn(w0, delta[:, None].expand(3, 4, 6, 10))
    ws.pow(2).mean().backward()
    assert w0.grad is not None and all(p.grad is not None for p in rnn.parameters())


def test_predictor_rejects_bad_shapes_and_round_trips(tmp_path):
    rnn = _tiny_rnn().eval()
    w = torch.zeros(1, 6, 10)
    with pytest.raises(ValueError, match="w_prev"):
        rnn.step(torch.zeros(1, 5, 10), w, rnn.init_state(1))
    with pytest.raises(ValueError, match="state"):
        rnn.step(w, w, rnn.init_state(2))
    with pytest.raises(ValueError, match="deltas"):
        rnn(w, torch.zeros(1, 6, 10))
    with pytest.raises(ValueError, match="cell"):
        LatentRNNConfig(num_ws=6, w_dim=10, cell="rnn")
    save_latent_rnn(tmp_path / "p", rnn)
    back = load_latent_rnn(tmp_path / "p")
    assert back.config == rnn.config and back.groups == rnn.groups
    d = torch.randn(1, 3, 6, 10)
    assert torch.equal(back(w, d), rnn(w, d))
    # A checkpoint for another generator size is refused with one clear error.
    (tmp_path / "p.json").write_text((tmp_path / "p.json").read_text().replace('"num_ws": 6', '"num_ws": 7'))
    with pytest.raises(CheckpointError):
        load_latent_rnn(tmp_path / "p")
