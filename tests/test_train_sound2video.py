"""The sound2video stage: E_a + predictor trained as the live pipeline uses them, G frozen."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from model.audio_features import LogMel, MelConfig
from model.bundle import random_bundle
from training.baselines import (
    LiveDynamics,
    SoundModels,
    live_windows,
    ours_latents,
    random_bases,
    truncate_sequence,
)
from training.stages.sound2video import (
    Frozen,
    Sound2VideoConfig,
    Sound2VideoError,
    Sound2VideoTrainer,
    SoundToVideo,
    default_discriminators,
    latent_spread,
    synthesize_at,
)

MEL = MelConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=32)


@pytest.fixture(scope="module")
def synthscapes_tiny(tmp_path_factory):
    from training.data.synthscapes import write_synthscapes

    root = tmp_path_factory.mktemp("synthscapes")
    write_synthscapes(root, 9, 2.0, 32, 0, fps=8.0, sample_rate=16000, progress=False)
    return root


@pytest.fixture(scope="module")
def bundle():
    b = random_bundle(resolution=32, channel_max=32, w_dim=64, mapping_layers=2, encoder_channels=(8, 16, 16, 16),
                      hidden_dim=32, mel=MEL, segment_seconds=0.5)
    with torch.no_grad():  # make E_a and the predictor move the latent noticeably
        for head in b.sound_inversion.heads:
            head.fc2.weight.mul_(50.0)
        for block in b.predictor.blocks:
            block.out.weight.mul_(20.0)
    return b


def test_live_windows_tile_the_segments():
    audio = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 8)
    windows, seg = live_windows(audio, 4)
    assert windows.shape == (2, 1 + 2 * 4, 8)
    assert seg.tolist() == [0, 4, 8]
    for t in range(3):  # the step at the end of segment t reads exactly segment t
        assert torch.equal(windows[:, seg[t]], audio[:, t])
    assert torch.equal(windows[0, 1], torch.arange(2, 10, dtype=torch.float32))  # hop of S/substeps samples


def test_training_rollout_equals_the_live_pipeline(bundle):
    """What is trained is what plays: the batched rollout matches SoundToLatent.step exactly."""
    from vjapp.engine.controls import Controls
    from vjapp.engine.pipeline import PipelineConfig, SoundToLatent

    G = bundle.generator
    gen = torch.Generator().manual_seed(0)
    audio = torch.randn(2, 3, 8000, generator=gen) * torch.tensor([0.02, 0.3]).view(2, 1, 1)
    base = random_bases(G.mapping, [3, 4], G.z_dim)
    pipeline = PipelineConfig(window_seconds=0.5)
    models = SoundModels(LogMel(MEL), bundle.sound_inversion, bundle.predictor, 5, LiveDynamics.live(pipeline))
    with torch.no_grad():
        ws_all, ws_seg = ours_latents(models, audio, base)
    assert ws_all.shape == (2, 11, G.num_ws, G.w_dim) and ws_seg.shape == (2, 3, G.num_ws, G.w_dim)
    windows, _ = live_windows(audio, 5)
    controls = Controls()
    for i in range(2):
        live = SoundToLatent(LogMel(MEL), bundle.sound_inversion, bundle.predictor, G.mapping.w_avg,
                             bundle.info.layer_groups, torch.device("cpu"), pipeline)
        for j in range(windows.shape[1]):
            got = live.step([windows[i, j]], base[i], controls).ws
            want = truncate_sequence(ws_all[i, j], G.mapping.w_avg, controls.truncation_psi)
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert float((ws_all[1, -1] - base[1]).norm()) > 0.0  # the loud clip moved


def test_latent_spread_is_zero_for_a_still_sequence_and_pulls_latents_together():
    still = torch.randn(2, 1, 4, 8).expand(2, 5, 4, 8)
    assert float(latent_spread(still)) == pytest.approx(0.0, abs=1e-10)
    ws = torch.randn(2, 5, 4, 8, requires_grad=True)
    start_ws = ws.detach().clone()
    opt = torch.optim.SGD([ws], lr=2.0)
    for _ in range(20):
        opt.zero_grad()
        latent_spread(ws).backward()
        opt.step()
    ws = ws.detach()
    assert float(latent_spread(ws)) < 0.2 * float(latent_spread(start_ws))
    # it pulls each sequence towards its own mean, which stays put
    torch.testing.assert_close(ws.mean(dim=1), start_ws.mean(dim=1), atol=1e-5, rtol=1e-5)
    with pytest.raises(Sound2VideoError):
        latent_spread(torch.zeros(2, 3, 4))


def test_partial_synthesis_matches_full_at_full_size_and_downsizes(bundle):
    G = bundle.generator
    ws = G.mapping(torch.randn(2, G.z_dim))
    with torch.no_grad():
        torch.testing.assert_close(synthesize_at(G.synthesis, ws, 32), G.synthesis(ws))
        low = synthesize_at(G.synthesis, ws, 16)
    assert low.shape == (2, 3, 16, 16) and bool(torch.isfinite(low).all())


def test_config_rejects_bad_values():
    with pytest.raises(Sound2VideoError, match="render_size"):
        Sound2VideoConfig(render_size=24)
    with pytest.raises(Sound2VideoError, match="lambda_b"):
        Sound2VideoConfig(lambda_b=-1.0)
    with pytest.raises(Sound2VideoError, match="clip_full_frames"):
        Sound2VideoConfig(segments=4, clip_full_frames=5)


def test_clip_full_frames_let_the_clip_losses_see_the_top_blocks(bundle):
    """At --render-size 16 the 32 px block's W+ rows get no gradient from the CLIP losses (they
    never see its picture); with --clip-full-frames they do, and the step reports those losses."""
    import copy

    def row_grads(full_frames: int) -> tuple[torch.Tensor, dict[str, float]]:
        b = copy.deepcopy(bundle)
        cfg = Sound2VideoConfig(segments=3, batch_size=2, render_size=16, lambda_img_adv=0.0, lambda_vid_adv=0.0,
                                lambda_b=0.0, clip_full_frames=full_frames)
        frozen = Frozen(b.generator, b.clip, b.audio_encoder, LogMel(MEL))
        model = SoundToVideo(b.sound_inversion, b.predictor, LiveDynamics.live())
        d_img, d_vid = default_discriminators(cfg, 16, 3)
        trainer = Sound2VideoTrainer(cfg, frozen, model, d_img, d_vid, substeps=2, render_size=16,
                                     device=torch.device("cpu"))
        seen: list[torch.Tensor] = []  # the gradient that reaches the rendered latents, per W+ row

        def recording(render):
            def wrapped(ws):
                ws.register_hook(lambda g: seen.append(g.abs().sum(dim=(0, 2))))
                return render(ws)
            return wrapped

        trainer.render, trainer.render_full = recording(trainer.render), recording(trainer.render_full)
        gen = torch.Generator().manual_seed(1)
        stats = trainer.step(torch.randn(2, 3, 8000, generator=gen) * 0.2,
                             torch.rand(2, 3, 3, 32, 32, generator=gen) * 2 - 1, ["thunderstorm", "wind"])
        return torch.stack(seen).sum(0), stats

    synthesis = bundle.generator.synthesis
    top = synthesis.num_ws - synthesis.b32.num_torgb - synthesis.b32.num_conv + 1  # rows only the 32 px block reads
    grads, stats = row_grads(0)
    assert "full_audio" not in stats
    assert float(grads[top:].sum()) == 0.0 and float(grads[:top].sum()) > 0
    grads, stats = row_grads(2)
    assert 0.0 <= stats["full_audio"] <= 2.0 and 0.0 <= stats["full_text"] <= 2.0
    assert float(grads[top:].sum()) > 0


def test_trainer_steps_are_finite_and_only_train_the_encoders(bundle):
    import copy

    b = copy.deepcopy(bundle)
    cfg = Sound2VideoConfig(segments=3, batch_size=2, r1_interval=1, render_size=16, d_channel_base=256,
                            d_channel_max=16, video_channels=(8, 16))
    frozen = Frozen(b.generator, b.clip, b.audio_encoder, LogMel(MEL))
    g_before = {k: v.clone() for k, v in b.generator.state_dict().items()}
    model = SoundToVideo(b.sound_inversion, b.predictor, LiveDynamics.live())
    e_before = [p.detach().clone() for p in model.parameters()]
    d_img, d_vid = default_discriminators(cfg, 16, 3)
    trainer = Sound2VideoTrainer(cfg, frozen, model, d_img, d_vid, substeps=2, render_size=16,
                                 device=torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    audio = torch.randn(2, 3, 8000, generator=gen) * 0.2
    frames = torch.rand(2, 3, 3, 32, 32, generator=gen) * 2 - 1
    for _ in range(2):
        stats = trainer.step(audio, frames, ["thunderstorm", "wind"])
    for key in ("loss", "loss_audio", "loss_text", "loss_spread", "g_img_adv", "g_vid_adv", "d_img", "d_vid", "r1"):
        assert math.isfinite(stats[key]), key
    assert 0.0 <= stats["loss_audio"] <= 2.0 and 0.0 <= stats["loss_text"] <= 2.0
    assert trainer.last_fake.shape == (6, 3, 16, 16)
    for k, v in b.generator.state_dict().items():  # G frozen
        assert torch.equal(v, g_before[k]), k
    assert any(not torch.equal(p, q) for p, q in zip(model.parameters(), e_before))  # E_a / predictor learn
    with pytest.raises(Sound2VideoError, match="captions"):
        trainer.step(audio, frames, ["only one"])


def _tiny_training_bundle(root: Path) -> Path:
    """A saved random bundle with its parts recorded as trained generator/clip/audio (as earlier stages leave it)."""
    from model.bundle import save_bundle

    b = random_bundle(resolution=32, channel_max=32, w_dim=64, mapping_layers=2, encoder_channels=(8, 16, 16, 16),
                      hidden_dim=32, mel=MEL, segment_seconds=0.5)
    return save_bundle(root / "bundle", b)


def test_stage_trains_a_few_steps_and_writes_parts_that_load(tmp_path, synthscapes_tiny):
    from model.bundle import load_bundle, read_bundle_info
    from training.cli import main

    out = _tiny_training_bundle(tmp_path)
    argv = ["sound2video", "--data", str(synthscapes_tiny), "--out", str(out), "--steps", "2", "--batch-size", "2",
            "--segments", "3", "--render-size", "16", "--encoder-channels", "8", "16", "--head-hidden", "16",
            "--rnn-hidden", "16", "--d-channel-base", "256", "--d-channel-max", "16", "--video-channels", "8", "16",
            "--no-tensorboard", "--log-every", "1", "--r1-interval", "1"]
    assert main(argv) == 0
    info = read_bundle_info(out)
    assert info.trained["sound_inversion"] and info.trained["predictor"]
    bundle = load_bundle(out)
    assert bundle.sound_inversion.config.channels == (8, 16)
    assert bundle.predictor.config.hidden_dim == 16
    run_dir = out / "runs" / "sound2video"
    assert any((run_dir / "checkpoints").glob("ckpt-*.json"))
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) >= 2 and "loss_audio" in lines[-1]
    # a second run with more steps resumes from the checkpoint instead of starting over
    argv[argv.index("--steps") + 1] = "3"
    assert main(argv) == 0
    import json

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["prefix"] == "train"] == [1, 2, 3]


def test_stage_refuses_a_missing_bundle(tmp_path, synthscapes_tiny):
    from training.cli import main

    assert main(["sound2video", "--data", str(synthscapes_tiny), "--out", str(tmp_path / "nope"),
                 "--steps", "1"]) == 1


def test_palette_distance_sees_brightness_and_layout():
    from training.losses import colour_layout, palette_distance

    black = -torch.ones(1, 3, 32, 32)
    grey = torch.full((1, 3, 32, 32), -0.1)  # a grey daylight street, about 0.45 in [0, 1]
    assert float(palette_distance(black, grey, 4)) == pytest.approx(0.9, abs=1e-6)
    assert float(palette_distance(grey, grey.clone(), 4)) == 0.0
    sky_over_ground = torch.cat([torch.full((1, 3, 16, 32), 0.6), torch.full((1, 3, 16, 32), -0.6)], dim=2)
    upside_down = sky_over_ground.flip(2)
    assert float(palette_distance(sky_over_ground, upside_down, 1)) == pytest.approx(0.0, abs=1e-6)  # same palette
    assert float(palette_distance(sky_over_ground, upside_down, 2)) == pytest.approx(1.2, abs=1e-6)  # other layout
    # sizes may differ: a 128 px frame against a 32 px real frame of the same picture
    big = torch.nn.functional.interpolate(sky_over_ground, size=(128, 128), mode="nearest")
    assert float(palette_distance(big, sky_over_ground, 4)) == pytest.approx(0.0, abs=1e-6)
    assert colour_layout(big, 4).shape == (1, 3, 4, 4)
    with pytest.raises(ValueError):
        colour_layout(big, 0)
    with pytest.raises(ValueError):
        palette_distance(big, torch.zeros(2, 3, 8, 8), 2)


def test_palette_term_pulls_frames_toward_the_paired_real_frames(bundle):
    """With only the palette term on, a few steps bring the frames' colour layout closer to the
    real frames of the same clips (here: bright frames, far from what the random bundle draws)."""
    import copy

    from training.losses import palette_distance

    b = copy.deepcopy(bundle)
    cfg = Sound2VideoConfig(segments=3, batch_size=2, render_size=16, lr=3e-3, lambda_audio=0.0, lambda_text=0.0,
                            lambda_b=0.0, lambda_img_adv=0.0, lambda_vid_adv=0.0, lambda_palette=1.0,
                            palette_grid=4, clip_full_frames=1)
    frozen = Frozen(b.generator, b.clip, b.audio_encoder, LogMel(MEL))
    model = SoundToVideo(b.sound_inversion, b.predictor, LiveDynamics.live())
    d_img, d_vid = default_discriminators(cfg, 16, 3)
    trainer = Sound2VideoTrainer(cfg, frozen, model, d_img, d_vid, substeps=2, render_size=16,
                                 device=torch.device("cpu"))
    gen = torch.Generator().manual_seed(3)
    audio = torch.randn(2, 3, 8000, generator=gen) * 0.3
    frames = torch.full((2, 3, 3, 32, 32), 0.8)
    frames[:, :, 2] = -0.2  # a pale yellow-ish scene

    def distance() -> float:
        """Palette distance of the full frames for fixed base latents (the training RNG left as it was)."""
        from training.baselines import loudness_units

        state = trainer._z_gen.get_state()
        trainer._z_gen.manual_seed(7)
        trainer.model.eval()
        with torch.no_grad():
            base = trainer.base_latents(2)
            windows, seg = live_windows(audio, 2)
            mels = frozen.logmel(windows.reshape(-1, windows.shape[-1])).view(2, windows.shape[1], MEL.n_mels, -1)
            ws = trainer.model(mels, base, loudness_units(windows))[:, seg]
            fake = trainer.render_full(ws.flatten(0, 1))
        trainer._z_gen.set_state(state)
        return float(palette_distance(fake, frames.flatten(0, 1), 4).mean())

    before = distance()
    for _ in range(12):
        stats = trainer.step(audio, frames, ["wind", "fire crackling"])
    after = distance()
    assert {"loss_palette", "palette_preview", "palette_full"} <= set(stats)
    assert after < 0.8 * before, (before, after)


def test_atlas_term_pulls_the_latents_onto_the_scene_the_show_steers_to():
    """With only the atlas term on, a few steps bring every segment's W+ latent closer to the atlas
    scene of its sound (the blend the show's scene layer steers to): E_a's offsets stay among the
    generator's own samples. Without an atlas the term is refused."""
    from model.atlas import AtlasSettings, AtlasSteering, build_atlas
    from training.baselines import loudness_units
    from training.stages.sound2video import atlas_distance

    torch.manual_seed(0)  # the same run whatever ran before it
    b = random_bundle(resolution=32, channel_max=32, w_dim=64, mapping_layers=2, encoder_channels=(8, 16, 16, 16),
                      hidden_dim=32, mel=MEL, segment_seconds=0.5)
    cfg = Sound2VideoConfig(segments=3, batch_size=2, render_size=16, lr=1e-3, lambda_audio=0.0, lambda_text=0.0,
                            lambda_b=0.0, lambda_img_adv=0.0, lambda_vid_adv=0.0, lambda_atlas=1.0)
    frozen = Frozen(b.generator, b.clip, b.audio_encoder, LogMel(MEL))
    model = SoundToVideo(b.sound_inversion, b.predictor, LiveDynamics.live())
    d_img, d_vid = default_discriminators(cfg, 16, 3)
    with pytest.raises(Sound2VideoError, match="atlas"):
        Sound2VideoTrainer(cfg, frozen, model, d_img, d_vid, substeps=2, render_size=16, device=torch.device("cpu"))
    steering = AtlasSteering(build_atlas(b.generator, b.clip, AtlasSettings(samples=64, batch=32)))
    trainer = Sound2VideoTrainer(cfg, frozen, model, d_img, d_vid, substeps=2, render_size=16,
                                 device=torch.device("cpu"), steering=steering)
    gen = torch.Generator().manual_seed(3)
    audio = torch.randn(2, 3, 8000, generator=gen) * 0.3
    frames = torch.zeros(2, 3, 3, 32, 32)

    def distance() -> float:
        state = trainer._z_gen.get_state()
        trainer._z_gen.manual_seed(7)
        trainer.model.eval()
        with torch.no_grad():
            # from the centre of W: E_a's offsets do not see the base, so from a random base the best
            # they can do still leaves that base's own distance from the scene
            base = b.generator.mapping.w_avg.expand(2, b.generator.num_ws, -1)
            windows, seg = live_windows(audio, 2)
            mels = frozen.logmel(windows.reshape(-1, windows.shape[-1])).view(2, windows.shape[1], MEL.n_mels, -1)
            ws = trainer.model(mels, base, loudness_units(windows))[:, seg].flatten(0, 1)
            target = steering.target(frozen.audio_encoder(mels[:, seg].flatten(0, 1)).float())
        trainer._z_gen.set_state(state)
        return float(atlas_distance(ws, target, steering.spread))

    before = distance()
    for _ in range(60):
        stats = trainer.step(audio, frames, ["wind", "fire crackling"])
    after = distance()
    assert "loss_atlas" in stats
    assert after < 0.85 * before, (before, after)  # (without the term no loss is on: nothing would move)
    # the distance is in the atlas' own units: a sample is about sqrt(2) spreads from another
    w = steering.atlas.w
    assert 1.0 < float(atlas_distance(w[:32, None], w[32:], steering.spread)) < 3.0


def test_stage_init_from_starts_from_another_bundles_parts(tmp_path, synthscapes_tiny):
    from model.bundle import load_bundle
    from training.bundle_io import read_training_json
    from training.cli import main

    common = ["--data", str(synthscapes_tiny), "--batch-size", "2", "--segments", "3", "--render-size", "16",
              "--head-hidden", "16", "--rnn-hidden", "16", "--d-channel-base", "256", "--d-channel-max", "16",
              "--video-channels", "8", "16", "--no-tensorboard", "--log-every", "1"]
    first = _tiny_training_bundle(tmp_path / "a")
    assert main(["sound2video", "--out", str(first), "--steps", "2", "--encoder-channels", "8", "16", *common]) == 0
    trained = load_bundle(first)

    second = _tiny_training_bundle(tmp_path / "b")
    argv = ["sound2video", "--out", str(second), "--steps", "1", "--lr", "1e-12", "--init-from", str(first),
            "--encoder-channels", "8", "16", "16", "--lambda-palette", "1.0", *common]
    assert main(argv) == 0
    tuned = load_bundle(second)
    assert tuned.sound_inversion.config.channels == (8, 16)  # the architecture is the init bundle's
    for mine, theirs in ((tuned.sound_inversion, trained.sound_inversion), (tuned.predictor, trained.predictor)):
        for (name, p), q in zip(mine.named_parameters(), theirs.parameters()):
            assert torch.allclose(p, q, atol=1e-6), name  # one step at lr 1e-12: still the init weights
    part = read_training_json(second)["parts"]["sound_inversion"]
    assert part["init_from"] == str(first) and part["trained"]

    # parts that do not fit the bundle (another W width) are refused with a message, nothing written
    from model.bundle import random_bundle, save_bundle

    other = save_bundle(tmp_path / "c" / "bundle", random_bundle(
        resolution=32, channel_max=32, w_dim=32, mapping_layers=2, encoder_channels=(8, 16, 16, 16), hidden_dim=32,
        mel=MEL, segment_seconds=0.5))
    third = _tiny_training_bundle(tmp_path / "d")
    argv[argv.index("--init-from") + 1] = str(other)
    argv[argv.index("--out") + 1] = str(third)
    assert main(argv) == 1
    assert not (third / "runs" / "sound2video" / "checkpoints").exists() or not any(
        (third / "runs" / "sound2video" / "checkpoints").glob("ckpt-*"))
