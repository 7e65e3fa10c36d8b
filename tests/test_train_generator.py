"""KID, class coverage, the StyleGAN2 training step and ``vjapp-train generator`` end to end."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from model.bundle import LANDSCAPE_LABELS
from model.clip import build_clip
from model.formats import read_network_config
from model.stylegan2 import Generator, StyleGAN2Config, load_generator
from training import bundle_io
from training.checkpoint import latest_checkpoint, read_checkpoint_doc
from training.cli import main as train_main
from training.kid import KIDError, class_coverage, kid
from training.stages.generator import GeneratorTrainConfig, GeneratorTrainer, augment

RES = 16
TINY = ["--fps", "4", "--resolution", str(RES), "--channel-base", "256", "--channel-max", "32", "--w-dim", "32",
        "--mapping-layers", "2", "--batch-size", "4", "--kid-samples", "12", "--kid-subsets", "5",
        "--coverage-samples", "8", "--sample-count", "4", "--log-every", "1", "--no-tensorboard"]


# -- KID ------------------------------------------------------------------------------------------


def direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² formula written out term by term (i != j sums by explicit masks)."""
    m, d = x.shape

    def k(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (a @ b.T / d + 1.0) ** 3

    off = ~np.eye(m, dtype=bool)
    return float(k(x, x)[off].mean() + k(y, y)[off].mean() - 2.0 * k(x, y).mean())


def test_kid_matches_the_formula_on_whole_sets() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 8))
    y = rng.normal(loc=0.3, size=(40, 8))
    mean, std = kid(x, y, subsets=1, subset_size=40)  # one subset = the whole sets (a permutation)
    assert mean == pytest.approx(direct_mmd2(y, x), rel=1e-9)
    assert std == 0.0
    # torch tensors in, same number out.
    assert kid(torch.from_numpy(x), torch.from_numpy(y), subsets=1, subset_size=40)[0] == pytest.approx(mean)


def test_kid_of_a_set_with_itself_is_near_zero_and_grows_with_a_shift() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 16))
    same, _ = kid(x, x, subsets=20, subset_size=100)
    shifted, shifted_std = kid(x, x + 0.5, subsets=20, subset_size=100)
    further, _ = kid(x, x + 1.0, subsets=20, subset_size=100)
    # The same set against itself: zero up to the overlap of the subsets (a small negative bias).
    assert abs(same) < 0.1 * shifted
    assert shifted > 3 * shifted_std
    assert further > shifted  # a larger shift is a larger distance
    # Two independent samples of one distribution: unbiased, so near zero too.
    other = rng.normal(size=(300, 16))
    assert abs(kid(x, other, subsets=20, subset_size=100)[0]) < 0.2 * shifted


def test_kid_rejects_unusable_features() -> None:
    x = np.zeros((10, 4))
    with pytest.raises(KIDError, match="widths differ"):
        kid(x, np.zeros((10, 5)))
    with pytest.raises(KIDError, match="at least 2 samples"):
        kid(x, np.zeros((1, 4)))
    with pytest.raises(KIDError, match=r"\[N, D\]"):
        kid(np.zeros(10), x)
    bad = x.copy()
    bad[0, 0] = np.nan
    with pytest.raises(KIDError, match="NaN"):
        kid(bad, x)


# -- class coverage -------------------------------------------------------------------------------


def tiny_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(StyleGAN2Config(z_dim=32, w_dim=32, mapping_layers=2, mapping_hidden_dim=32, resolution=RES,
                                     channel_base=256, channel_max=32)).eval()


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return build_clip("vjapp-tiny").eval()


def test_class_coverage_fractions_and_a_collapsed_generator(tiny_clip) -> None:
    labels = ["waterfall", "volcano", "wind"]
    G = tiny_generator()
    cov = class_coverage(G, tiny_clip, labels, n_samples=12, batch_size=6)
    assert list(cov) == labels
    assert sum(cov.values()) == pytest.approx(1.0)
    assert all(0.0 <= v <= 1.0 for v in cov.values())
    # A generator whose W ignores z (mode collapse) draws the same image every time: one class gets all.
    with torch.no_grad():
        last = G.mapping.fc1
        last.weight.zero_()
    collapsed = class_coverage(G, tiny_clip, labels, n_samples=6)
    assert max(collapsed.values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="distinct"):
        class_coverage(G, tiny_clip, ["a", "a"], n_samples=2)


# -- augmentation and the training step -----------------------------------------------------------


def test_augmentations_keep_shape_and_let_r1_through() -> None:
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 3, RES, RES) * 2 - 1).requires_grad_(True)
    y = augment(x, ("color", "translation", "cutout"), gen)
    assert y.shape == x.shape
    (g,) = torch.autograd.grad(y.square().sum(), x, create_graph=True)
    g.sum().backward()  # a double backward goes through every augmentation
    assert x.grad is not None and torch.isfinite(x.grad).all()
    # Translation moves content and shifts zeros in; cutout zeroes a half-size square (clipped at the border).
    ones = torch.ones(8, 1, RES, RES)
    shifted = augment(ones, ("translation",), gen)
    assert (shifted == 0).any() and set(shifted.unique().tolist()) <= {0.0, 1.0}
    cut = augment(ones, ("cutout",), gen)
    frac = (cut == 0).float().mean(dim=[1, 2, 3])
    assert (frac > 0).all() and (frac <= 0.25).all() and (frac == 0.25).any()
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment(ones, ("zoom",))


def tiny_config(**kw) -> GeneratorTrainConfig:
    base = dict(resolution=RES, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256, channel_max=32, batch_size=4,
                r1_gamma=0.1, r1_interval=2)
    base.update(kw)
    return GeneratorTrainConfig(**base)


def test_training_steps_update_g_d_ema_and_w_avg() -> None:
    torch.manual_seed(0)
    trainer = GeneratorTrainer(tiny_config(augment=("translation",), mirror=True, ema_beta=0.9))
    G0 = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    D0 = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    real = torch.rand(4, 3, RES, RES) * 2 - 1
    stats = [trainer.step(real) for _ in range(3)]
    for s in stats:
        assert np.isfinite([s.loss_G, s.loss_D, s.D_real, s.D_fake]).all()
    assert [s.r1_ran for s in stats] == [True, False, True]  # lazy R1 every 2 steps, from the first
    assert stats[0].r1_penalty > 0 and stats[1].r1_penalty == stats[0].r1_penalty
    assert trainer.step_count == 3 and trainer.nimg == 12
    assert not torch.equal(trainer.G.synthesis.b4.const, G0["synthesis.b4.const"])
    assert not torch.equal(trainer.D.b4.out.weight, D0["b4.out.weight"])
    assert trainer.G.mapping.w_avg.abs().sum() > 0  # tracked on the D step's fakes
    # G_ema lags G (beta 0.9) and carries G's buffers.
    ema, g = trainer.G_ema.state_dict(), trainer.G.state_dict()
    assert not torch.equal(ema["synthesis.b4.const"], g["synthesis.b4.const"])
    assert torch.equal(ema["mapping.w_avg"], g["mapping.w_avg"])
    moved_g = (g["synthesis.b4.const"] - G0["synthesis.b4.const"]).abs().mean()
    moved_ema = (ema["synthesis.b4.const"] - G0["synthesis.b4.const"]).abs().mean()
    assert 0 < moved_ema < moved_g
    with pytest.raises(ValueError, match=r"\[N, 3, 16, 16\]"):
        trainer.step(torch.zeros(4, 3, 8, 8))


def _ddp_worker(rank: int, store: str, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        # Rank 1 starts from other weights (seed 1): the trainer must broadcast rank 0's.
        trainer = GeneratorTrainer(tiny_config(seed=rank), world=2, rank=rank)
        start = {k: v.clone() for k, v in trainer.G.state_dict().items()}
        real = torch.rand(4, 3, RES, RES, generator=torch.Generator().manual_seed(100 + rank)) * 2 - 1
        for _ in range(2):
            trainer.step(real)
        state = {f"G.{k}": v for k, v in trainer.G.state_dict().items()}
        state.update({f"D.{k}": v for k, v in trainer.D.state_dict().items()})
        state.update({f"start.{k}": v for k, v in start.items()})
        state["nimg"] = torch.tensor(trainer.nimg)
        torch.save(state, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_data_parallel_ranks_start_and_stay_identical(tmp_path: Path) -> None:
    """Two gloo processes with different data: one flat all-reduce per step keeps the weights equal."""
    import torch.multiprocessing as mp

    # fork: no re-import of torch per worker (spawn costs ~10 s on 2 cores); a deadline guards CI.
    ctx = mp.start_processes(_ddp_worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=2, join=False,
                             start_method="fork")
    deadline = time.monotonic() + 90
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("data-parallel workers did not finish in 90 s")
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert int(a["nimg"]) == 16  # 2 steps x 4 images x 2 ranks
    for key in a:
        if key.startswith(("G.", "D.", "start.")):
            assert torch.equal(a[key], b[key]), key
    assert not torch.equal(a["G.synthesis.b4.const"], a["start.synthesis.b4.const"])


@pytest.mark.requires_cuda
def test_bf16_autocast_steps_on_cuda() -> None:
    trainer = GeneratorTrainer(tiny_config(augment=("color", "translation", "cutout")), "cuda",
                               amp_dtype=torch.bfloat16)
    assert trainer.amp_dtype == torch.bfloat16
    real = torch.rand(4, 3, RES, RES, device="cuda") * 2 - 1
    for _ in range(3):
        s = trainer.step(real)
        assert np.isfinite([s.loss_G, s.loss_D, s.r1_penalty]).all()
    assert all(torch.isfinite(p).all() for p in trainer.G_ema.parameters())


def test_amp_is_refused_on_the_cpu() -> None:
    trainer = GeneratorTrainer(tiny_config(), "cpu", amp_dtype=torch.bfloat16)
    assert trainer.amp_dtype is None  # float32 on the CPU, with a warning


def test_ema_schedule_follows_nvidia_half_life() -> None:
    trainer = GeneratorTrainer(tiny_config(ema_kimg=1.0, ema_rampup=0.0))
    assert trainer.ema_beta() == pytest.approx(0.5 ** (4 / 1000))
    ramp = GeneratorTrainer(tiny_config(ema_kimg=1.0, ema_rampup=0.05))
    ramp.nimg = 400  # ramp-up: half-life min(1000, 400 * 0.05) = 20 images
    assert ramp.ema_beta() == pytest.approx(0.5 ** (4 / 20))


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown augmentations"):
        tiny_config(augment=("zoom",))
    with pytest.raises(ValueError, match="r1_gamma"):
        tiny_config(r1_gamma=-1.0)
    with pytest.raises(ValueError, match="style_mixing"):
        tiny_config(style_mixing=2.0)


# -- the stage ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthscapes set (18 one-second clips, 2 per class: 36 train and 36 val frames at 4 fps)."""
    from training.data.synthscapes import write_synthscapes

    return write_synthscapes(tmp_path_factory.mktemp("synthscapes"), clips=18, seconds=1.0, size=32, seed=0,
                             fps=4, sample_rate=8000, progress=False)


def test_stage_trains_and_writes_a_loadable_generator(frames: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    rc = train_main(["generator", "--data", str(frames), "--out", str(out), "--steps", "3", "--ckpt-every", "2",
                     "--sample-every", "2", "--augment", "translation,cutout", *TINY, "--tensorboard"])
    assert rc == 0
    G = load_generator(out / "generator")
    assert G.img_resolution == RES and G.w_dim == 32
    with torch.no_grad():
        img = G(torch.randn(2, G.z_dim))
    assert img.shape == (2, 3, RES, RES) and torch.isfinite(img).all()
    meta = read_network_config(out / "generator", "stylegan2")["metadata"]
    assert meta["trained"] is True and meta["step"] == 3
    # What was written is G_ema, not G: compare with the last checkpoint's two copies.
    run_dir = out / "runs" / "generator"
    ckpt = latest_checkpoint(run_dir / "checkpoints")
    assert ckpt is not None and read_checkpoint_doc(ckpt)["step"] == 3
    from safetensors.torch import load_file
    tensors = load_file(str(ckpt.with_suffix(".safetensors")))
    key = "synthesis.b4.const"
    assert torch.equal(G.state_dict()[key], tensors[f"model/G_ema/{key}"])
    assert not torch.equal(tensors[f"model/G_ema/{key}"], tensors[f"model/G/{key}"])
    assert "model/D/b4.out.weight" in tensors
    assert any(k.startswith("optim/G/state/") for k in tensors) and any(k.startswith("optim/D/state/") for k in tensors)
    # Losses were logged and finite; sample grids were written; KID is n/a without a CLIP.
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["prefix"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    assert all(np.isfinite([r["loss/G"], r["loss/D"]]).all() for r in train_rows)
    assert sorted(p.name for p in (run_dir / "samples").glob("*.png")) == ["samples_G_ema-00000002.png",
                                                                          "samples_G_ema-00000003.png"]
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    report = json.loads((run_dir / "eval.json").read_text())
    assert report["kid"] is None and "no CLIP" in report["reason"]
    assert bundle_io.read_training_json(out)["eval"]["generator"]["step"] == 3


def test_stage_reports_kid_and_coverage_with_a_bundle_clip(frames: Path, tmp_path: Path, tiny_clip) -> None:
    out = tmp_path / "bundle"
    bundle_io.write_part(out, "clip", tiny_clip, trained=False)
    rc = train_main(["generator", "--data", str(frames), "--out", str(out), "--steps", "2", "--kid-every", "1", *TINY,
                     "--output-size", str(4 * RES)])
    assert rc == 0
    early = json.loads((out / "runs" / "generator" / "eval" / "kid-00000001.json").read_text())
    assert early["step"] == 1 and np.isfinite(early["kid"])
    report = json.loads((out / "runs" / "generator" / "eval.json").read_text())
    assert isinstance(report["kid"], float) and np.isfinite(report["kid"])
    assert report["n_real"] == 12 and report["n_fake"] == 12 and report["features"] == "clip_image"
    assert set(report["coverage"]) == set(LANDSCAPE_LABELS)
    assert sum(report["coverage"].values()) == pytest.approx(1.0)
    # generator + CLIP make a bundle.json; it asks the app to show the frames upsampled.
    info = json.loads((out / "bundle.json").read_text())
    assert info["resolution"] == RES and info["output_size"] == 4 * RES
    # resuming without --output-size keeps what the bundle says
    assert train_main(["generator", "--data", str(frames), "--out", str(out), "--steps", "3", *TINY]) == 0
    assert json.loads((out / "bundle.json").read_text())["output_size"] == 4 * RES


def test_stage_resumes_from_its_checkpoint(frames: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    assert train_main(["generator", "--data", str(frames), "--out", str(out), "--steps", "2", *TINY]) == 0
    assert train_main(["generator", "--data", str(frames), "--out", str(out), "--steps", "3", *TINY]) == 0
    rows = [json.loads(line) for line in (out / "runs" / "generator" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["prefix"] == "train"] == [1, 2, 3]  # step 3 only in the second run
    doc = read_checkpoint_doc(latest_checkpoint(out / "runs" / "generator" / "checkpoints"))
    assert doc["extra"]["nimg"] == 12 and doc["extra"]["step_count"] == 3


def test_dry_run_writes_nothing(frames: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bundle"
    rc = train_main(["generator", "--data", str(frames), "--out", str(out), "--dry-run", *TINY])
    assert rc == 0
    assert not out.exists()
    printed = json.loads(capsys.readouterr().out)
    assert printed["stage"] == "generator" and printed["config"]["resolution"] == RES
    assert printed["config"]["r1_gamma"] == pytest.approx(0.0002 * RES**2 / 4)


def test_stage_rejects_bad_options(frames: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bundle"
    rc = train_main(["generator", "--data", str(frames), "--out", str(out), "--augment", "zoom", *TINY])
    assert rc == 1
    assert "unknown augmentations" in capsys.readouterr().err
    rc = train_main(["generator", "--data", str(frames), "--out", str(out), *TINY, "--resolution", "24"])
    assert rc == 1
    assert "power of two" in capsys.readouterr().err
    rc = train_main(["generator", "--data", str(frames), "--out", str(out), *TINY, "--output-size", "100"])
    assert rc == 1
    assert "--output-size" in capsys.readouterr().err


def test_d_warmup_trains_only_d_and_holds_g_and_its_ema() -> None:
    config = GeneratorTrainConfig(resolution=RES, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256,
                                  channel_max=32, batch_size=4, d_warmup=2, r1_interval=1)
    trainer = GeneratorTrainer(config)
    g0 = {k: v.clone() for k, v in trainer.G.state_dict().items()}
    ema0 = {k: v.clone() for k, v in trainer.G_ema.state_dict().items()}
    d0 = {k: v.clone() for k, v in trainer.D.state_dict().items()}
    real = torch.rand(4, 3, RES, RES) * 2 - 1
    for _ in range(2):
        stats = trainer.step(real)
        assert stats.extra.get("d_warmup") == 1.0 and np.isfinite(stats.loss_G) and stats.ema_beta == 1.0
    assert all(torch.equal(v, g0[k]) for k, v in trainer.G.state_dict().items() if k != "mapping.w_avg")
    assert all(torch.equal(v, ema0[k]) for k, v in trainer.G_ema.state_dict().items() if k != "mapping.w_avg")
    assert any(not torch.equal(v, d0[k]) for k, v in trainer.D.state_dict().items())
    trainer.step(real)  # warm-up over: G learns
    assert any(not torch.equal(v, g0[k]) for k, v in trainer.G.state_dict().items())
    with pytest.raises(ValueError, match="d_warmup"):
        GeneratorTrainConfig(resolution=RES, channel_base=256, channel_max=32, d_warmup=-1)


def test_stage_fine_tunes_a_bundles_generator_with_a_fresh_d(frames: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture) -> None:
    source = tmp_path / "source"
    assert train_main(["generator", "--data", str(frames), "--out", str(source), "--steps", "2", *TINY]) == 0
    G_src = load_generator(source / "generator")
    out = tmp_path / "tuned"
    args = ["generator", "--data", str(frames), "--out", str(out), "--init-from", str(source), "--d-warmup", "2", *TINY]
    assert train_main([*args, "--steps", "2"]) == 0  # the whole run is warm-up: G comes out as it went in
    G = load_generator(out / "generator")
    for (k, v), w in zip(G.state_dict().items(), G_src.state_dict().values()):
        if k != "mapping.w_avg":  # w_avg is tracked on the D step's fakes even while G is held
            assert torch.equal(v, w), k
    meta = read_network_config(out / "generator", "stylegan2")["metadata"]
    assert meta["init_from"] == str(source) and meta["config"]["d_warmup"] == 2
    # past the warm-up G learns; resuming comes from the run's own checkpoint, not the source again
    assert train_main([*args, "--steps", "3"]) == 0
    G3 = load_generator(out / "generator")
    assert any(not torch.equal(v, w) for v, w in zip(G3.state_dict().values(), G_src.state_dict().values()))
    doc = read_checkpoint_doc(latest_checkpoint(out / "runs" / "generator" / "checkpoints"))
    assert doc["step"] == 3 and doc["extra"]["step_count"] == 3
    # another architecture is refused with the option to pass
    other = ["generator", "--data", str(frames), "--out", str(tmp_path / "x"), "--init-from", str(source),
             "--steps", "1", *TINY]
    other[other.index("--channel-max") + 1] = "16"
    capsys.readouterr()
    assert train_main(other) == 1
    err = capsys.readouterr().err
    assert "channel_max" in err and "--channel-max 32" in err
    assert train_main([*other[:4], str(tmp_path / "nothing-here"), *other[5:]]) == 1
