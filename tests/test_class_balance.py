"""The classifier-in-the-loop class-balance term of generator training (``--class-balance``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from judge_fixtures import untrained_judges

from model.bundle import LANDSCAPE_LABELS
from model.clip import build_clip
from training import bundle_io
from training.checkpoint import latest_checkpoint, read_checkpoint_doc
from training.class_balance import ClassBalance
from training.cli import main as train_main
from training.stages.generator import GeneratorTrainConfig, GeneratorTrainer

LABELS = ["waterfall", "volcano", "wind"]
RES = 16
TINY = ["--fps", "4", "--resolution", str(RES), "--channel-base", "256", "--channel-max", "32", "--w-dim", "32",
        "--mapping-layers", "2", "--batch-size", "4", "--kid-samples", "12", "--kid-subsets", "5",
        "--coverage-samples", "8", "--sample-count", "4", "--log-every", "1", "--no-tensorboard"]


@pytest.fixture(scope="module")
def tiny_clip():
    torch.manual_seed(0)
    return build_clip("vjapp-tiny").eval()


def test_the_term_is_the_first_order_change_of_kl_to_uniform(tiny_clip) -> None:
    balance = ClassBalance(tiny_clip, LABELS, momentum=0.5)
    balance.marginal = torch.tensor([0.8, 0.15, 0.05])  # class 0 drawn far too often, class 2 far too rarely
    images = torch.rand(6, 3, 32, 32) * 2 - 1
    p = balance.probabilities(images)
    assert p.shape == (6, 3) and torch.allclose(p.sum(dim=1), torch.ones(6))
    term, stats = balance(images)
    m = 0.5 * torch.tensor([0.8, 0.15, 0.05]) + 0.5 * p.mean(dim=0)  # the marginal is updated first
    assert torch.allclose(balance.marginal, m, atol=1e-6)
    entropy = -(p * p.log()).sum(dim=1).mean()
    expected = (p.mean(dim=0) * torch.log(3 * m)).sum() + entropy
    assert float(term) == pytest.approx(float(expected), rel=1e-5, abs=1e-6)
    assert stats["balance/kl_uniform"] == pytest.approx(float((m * torch.log(3 * m)).sum()), rel=1e-5)
    assert stats["balance/min_class"] == pytest.approx(float(m.min()), rel=1e-5)


def _step_down(balance: ClassBalance, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
    """Mean class probabilities before and after a small step of ``images`` down the term's
    gradient, and the term's stats."""
    with torch.no_grad():
        before = balance.probabilities(images).mean(dim=0)
    term, stats = balance(images)
    (grad,) = torch.autograd.grad(term, images)
    with torch.no_grad():
        after = balance.probabilities(images - 0.05 * grad / grad.abs().max()).mean(dim=0)
    return before, after, stats


def test_a_step_down_the_term_moves_mass_from_overdrawn_to_underdrawn_classes(tiny_clip) -> None:
    """The running marginal says class 0 is drawn too often and class 2 too rarely: a small step of
    the images down the term's gradient lowers class 0's mean probability and raises class 2's."""
    torch.manual_seed(1)
    for marginal, over, under in (([0.8, 0.15, 0.05], 0, 2), ([0.05, 0.15, 0.8], 2, 0)):
        balance = ClassBalance(tiny_clip, LABELS, momentum=0.999)
        balance.marginal = torch.tensor(marginal)
        images = (torch.rand(16, 3, 32, 32) * 2 - 1).requires_grad_(True)
        before, after, _ = _step_down(balance, images)
        assert after[over] < before[over] and after[under] > before[under], (marginal, before, after)


def test_state_round_trips_and_rejects_what_does_not_fit(tiny_clip) -> None:
    a = ClassBalance(tiny_clip, LABELS)
    a.marginal = torch.tensor([0.5, 0.3, 0.2])
    b = ClassBalance(tiny_clip, LABELS)
    a.nearest_marginal = torch.tensor([0.7, 0.3, 0.0])
    b.load_state(json.loads(json.dumps(a.state())))
    assert torch.allclose(b.marginal, a.marginal) and torch.allclose(b.nearest_marginal, a.nearest_marginal)
    c = ClassBalance(tiny_clip, ["rain", "fire", "sea"])
    c.load_state(a.state())  # other labels: keeps its own uniform start
    assert torch.allclose(c.marginal, torch.full([3], 1 / 3))
    with pytest.raises(ValueError, match="distinct"):
        ClassBalance(tiny_clip, ["wind", "wind"])
    with pytest.raises(ValueError, match="momentum"):
        ClassBalance(tiny_clip, LABELS, momentum=1.0)


def test_trainer_adds_the_term_and_checkpoints_its_marginal(tiny_clip) -> None:
    config = GeneratorTrainConfig(resolution=RES, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256,
                                  channel_max=32, batch_size=4, class_balance=1.0)
    with pytest.raises(ValueError, match="ClassBalance"):
        GeneratorTrainer(config)
    trainer = GeneratorTrainer(config, balance=ClassBalance(tiny_clip, LABELS, momentum=0.5))
    stats = trainer.step(torch.rand(4, 3, RES, RES) * 2 - 1)
    assert set(stats.extra) == {"balance/term", "balance/entropy", "balance/kl_uniform", "balance/min_class"}
    assert all(math.isfinite(v) for v in stats.scalars().values())
    state = trainer.state()
    assert state["class_balance"]["labels"] == LABELS
    assert not torch.allclose(torch.tensor(state["class_balance"]["marginal"]), torch.full([3], 1 / 3))
    resumed = GeneratorTrainer(config, balance=ClassBalance(tiny_clip, LABELS, momentum=0.5))
    resumed.load_state(json.loads(json.dumps(state)))
    assert resumed.step_count == 1
    assert torch.allclose(resumed.balance.marginal, torch.tensor(state["class_balance"]["marginal"]))
    with pytest.raises(ValueError, match="class_balance"):
        GeneratorTrainConfig(resolution=RES, channel_base=256, channel_max=32, class_balance=-1.0)
    # --class-balance-start: a plain run first, the term from that step on.
    late = GeneratorTrainer(GeneratorTrainConfig(**{**config.__dict__, "class_balance_start": 1}),
                            balance=ClassBalance(tiny_clip, LABELS, momentum=0.5))
    real = torch.rand(4, 3, RES, RES) * 2 - 1
    assert late.step(real).extra == {} and torch.allclose(late.balance.marginal, torch.full([3], 1 / 3))
    assert "balance/term" in late.step(real).extra


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.synthscapes import write_synthscapes

    return write_synthscapes(tmp_path_factory.mktemp("synthscapes"), clips=18, seconds=1.0, size=32, seed=0,
                             fps=4, sample_rate=8000, progress=False)


def test_stage_with_class_balance_needs_a_clip_then_trains_and_resumes(frames: Path, tmp_path: Path, tiny_clip,
                                                                       capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "bundle"
    args = ["generator", "--data", str(frames), "--out", str(out), *TINY, "--class-balance", "0.5"]
    assert train_main([*args, "--steps", "2"]) == 1
    assert "--class-balance needs a CLIP" in capsys.readouterr().err
    bundle_io.write_part(out, "clip", tiny_clip, trained=False)
    assert train_main([*args, "--steps", "2"]) == 0
    run_dir = out / "runs" / "generator"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["prefix"] == "train"]
    assert all("balance/kl_uniform" in r for r in train_rows)
    doc = read_checkpoint_doc(latest_checkpoint(run_dir / "checkpoints"))
    assert doc["config"]["class_balance"] == 0.5
    saved = doc["extra"]["class_balance"]
    assert saved["labels"] == list(LANDSCAPE_LABELS) and sum(saved["marginal"]) == pytest.approx(1.0, abs=1e-5)
    # Resuming carries the running marginal on (the trainer restores it from the checkpoint's extra).
    assert train_main([*args, "--steps", "3"]) == 0
    doc = read_checkpoint_doc(latest_checkpoint(run_dir / "checkpoints"))
    assert doc["step"] == 3 and doc["extra"]["class_balance"]["marginal"] != saved["marginal"]


def test_the_pull_reaches_a_class_no_fake_comes_near(tiny_clip) -> None:
    """The balance term's gradient for a class every fake gives ~0 probability is ~0; the pull's
    is not, and a step down it raises that class's probability in the fake nearest to it."""
    torch.manual_seed(2)
    balance = ClassBalance(tiny_clip, LABELS, momentum=0.999, pull=1.0)
    balance.marginal = torch.tensor([0.4, 0.3, 0.3])  # class 2 has its share of the probability mass...
    balance.nearest_marginal = torch.tensor([0.6, 0.399, 0.001])  # ...but is the top-1 of almost no fake
    assert balance.deficit().tolist() == pytest.approx([0.0, 0.0, 3 * (1 / 3 - 0.001)], abs=1e-6)
    images = (torch.rand(8, 3, 32, 32) * 2 - 1).requires_grad_(True)
    with torch.no_grad():
        before = balance.log_probabilities(images)[:, 2]
    term, stats = balance(images)
    assert stats["balance/pull"] == pytest.approx(-float(balance.deficit()[2] * before.max()), rel=1e-4)
    (grad,) = torch.autograd.grad(term, images)
    nearest = int(before.argmax())
    assert float(grad[nearest].abs().sum()) > 0
    with torch.no_grad():
        after = balance.log_probabilities(images - 0.05 * grad / grad.abs().max())[:, 2]
    assert after[nearest] > before[nearest]
    # with every class drawn about equally often the pull is about nothing
    even = ClassBalance(tiny_clip, LABELS, momentum=0.999, pull=1.0)
    assert abs(even(images.detach())[1]["balance/pull"]) < 0.01 * stats["balance/pull"]
    with pytest.raises(ValueError, match="pull"):
        ClassBalance(tiny_clip, LABELS, pull=-1.0)


def test_the_term_can_see_the_fakes_truncated_as_the_show_draws_them(tiny_clip, monkeypatch) -> None:
    """--class-balance-psi: the term classifies the same latents rendered truncated toward w_avg; at a
    psi near 0 every fake it sees is about the mean image, at psi 1 they are the G step's own fakes."""
    import training.stages.generator as generator_stage

    monkeypatch.setattr(generator_stage, "_aug_translation", lambda x, g: x)  # compare the images themselves
    spreads = {}
    for psi in (1.0, 0.01):
        config = GeneratorTrainConfig(resolution=RES, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256,
                                      channel_max=32, batch_size=4, class_balance=1.0, class_balance_psi=psi,
                                      style_mixing=0.0)
        trainer = GeneratorTrainer(config, balance=ClassBalance(tiny_clip, LABELS, momentum=0.5))
        seen: list[torch.Tensor] = []
        original = trainer.balance.__call__

        def recording(images, original=original):
            seen.append(images.detach().clone())
            return original(images)

        trainer.balance = type("Recording", (), {"__call__": staticmethod(recording)})()
        trainer.step(torch.rand(4, 3, RES, RES) * 2 - 1)
        assert len(seen) == 1 and seen[0].shape == (4, 3, RES, RES)
        spreads[psi] = float(seen[0].std(dim=0).mean())
    assert spreads[0.01] < 0.2 * spreads[1.0], spreads
    with pytest.raises(ValueError, match="class_balance_psi"):
        GeneratorTrainConfig(resolution=RES, channel_base=256, channel_max=32, class_balance_psi=0.0)


def test_classifiers_trained_on_real_frames_can_drive_the_term_instead_of_clip() -> None:
    """--class-balance-judge: the fakes' classes come from the classifiers' summed logits, and a step
    down the term moves probability from an over-drawn class to an under-drawn one, as with CLIP."""
    judges = untrained_judges(LABELS)
    balance = ClassBalance(None, LABELS, momentum=0.999, judges=judges)
    images = (torch.rand(16, 3, 32, 32) * 2 - 1).requires_grad_(True)
    logp = balance.log_probabilities(images)
    want = torch.log_softmax(judges[0](images) + judges[1](images), dim=1)
    torch.testing.assert_close(logp, want)
    balance.marginal = torch.tensor([0.8, 0.15, 0.05])
    before, after, stats = _step_down(balance, images)
    assert after[0] < before[0] and after[2] > before[2]
    assert "balance/kl_uniform" in stats
    with pytest.raises(ValueError, match="labels"):
        ClassBalance(None, LABELS, judges=untrained_judges(["a", "b", "c"]))
    with pytest.raises(ValueError, match="CLIP or classifiers"):
        ClassBalance(None, LABELS)


def test_stage_trains_its_own_balance_classifiers_and_refuses_the_evals(frames: Path, tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture) -> None:
    """The stage trains the classifiers on the data it is given (own seed), needs no CLIP for the term,
    records what drove it, and refuses the eval judge's seeds or a folder without classifiers."""
    from training.judge import load_judge, save_judge

    out, judge_dir = tmp_path / "bundle", tmp_path / "balance-judge"
    args = ["generator", "--data", str(frames), "--out", str(out), *TINY, "--class-balance", "0.5",
            "--class-balance-judge", str(judge_dir)]
    assert train_main([*args, "--steps", "1"]) == 1
    assert "no full classifier there" in capsys.readouterr().err
    assert train_main([*args, "--steps", "1", "--class-balance-judge-seed", "90001"]) == 1
    assert "own seed" in capsys.readouterr().err
    assert train_main([*args, "--steps", "2", "--class-balance-judge-data", str(frames),
                       "--class-balance-judge-steps", "20"]) == 0
    assert load_judge(judge_dir, "full").config.seed == 31_337  # trained there, with the stage's seed
    run_dir = out / "runs" / "generator"
    doc = read_checkpoint_doc(latest_checkpoint(run_dir / "checkpoints"))
    assert doc["config"]["class_balance_classifier"] == "judge"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("balance/kl_uniform" in r for r in rows if r["prefix"] == "train")
    # the eval's own judge (its seeds) in that folder is refused
    eval_like = untrained_judges(list(LANDSCAPE_LABELS), seed=90_001)
    for j, form in zip(eval_like, ("full", "structure")):
        save_judge(tmp_path / "eval-judge", j)
    assert train_main([*args[:-1], str(tmp_path / "eval-judge"), "--steps", "3"]) == 1
    assert "eval's judge" in capsys.readouterr().err
