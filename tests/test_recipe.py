"""``vjapp-train recipe``: every stage in order into one bundle, resumable across invocations."""

from __future__ import annotations

import argparse
import json
import time

import pytest

from training.recipes import (
    EXIT_STOPPED,
    RECIPES,
    STAGE_MODULE_OF,
    RecipeContext,
    read_state,
    run_recipe,
    recipe_stages,
    stage_argv,
)
from training.run import TrainingError

ONE_STEP = {"clip": 1, "audio": 1, "generator": 1, "sound2video": 1}


@pytest.mark.parametrize("name,scale", [("tiny", "default"), ("default", "tiny"), ("default", "default")])
def test_every_stage_accepts_the_recipes_options(tmp_path, name, scale):
    """The recipe's command lines parse with each stage's own parser (no stage is run)."""
    import importlib

    from training.cli import STAGES

    ctx = RecipeContext(out=tmp_path / "b", work=tmp_path / "w", scale=scale, device="cpu", amp=True)
    sizes = RECIPES[name].sizes(scale)
    assert recipe_stages(sizes)[:2] == ("synthscapes", "signal-data") and recipe_stages(sizes)[-2:] == (
        "atlas-classes", "eval")  # every recipe here trains its own real-frame classifiers
    for stage in recipe_stages(sizes):
        module = importlib.import_module(STAGES[STAGE_MODULE_OF.get(stage, stage)][0])
        parser = argparse.ArgumentParser(prog=stage, exit_on_error=False)
        module.add_arguments(parser)
        args = parser.parse_args(stage_argv(stage, sizes, ctx) + ctx.device_argv(stage))
        # `recipe --device cpu --amp` reaches every stage that runs a model (--amp: the training ones)
        assert getattr(args, "device", "cpu") == "cpu" and getattr(args, "amp", True)
        assert hasattr(args, "device") == (stage not in ("synthscapes", "signal-data"))
        assert hasattr(args, "amp") == (stage in ("clip", "audio", "generator", "sound2video"))
        if stage == "generator":
            assert args.resolution == sizes.resolution
            assert (args.class_balance, args.class_balance_start) == (sizes.class_balance, sizes.class_balance_start)
            assert (args.class_balance_pull, args.class_balance_psi) == (sizes.class_balance_pull,
                                                                         sizes.class_balance_psi)
        if stage == "generator" and sizes.class_balance > 0:  # balanced by the classifiers, not CLIP
            assert (args.class_balance_judge, args.class_balance_judge_data) == (ctx.signal_classifiers,
                                                                                 ctx.signal_data)
        if stage == "signal-data":  # their own data: another folder, another seed
            assert args.out == ctx.signal_data != ctx.data and args.seed == sizes.signal_seed != 0
        if stage == "atlas-classes":
            assert args.classifier_seed == sizes.signal_classifier_seed not in (90_001, 90_002)
        if stage == "sound2video":
            assert (args.render_size, args.clip_full_frames) == (sizes.render_size, sizes.clip_full_frames)
            assert args.lambda_palette == sizes.lambda_palette
    if name == "default" and scale == "default":
        # the embedded default is built at the sizes whose speed `vjapp bench` measured: those of
        # the random stand-in bundle the app plays until the default exists
        import inspect

        from model.audio_features import LIVE_MEL
        from model.bundle import DEFAULT_OUTPUT_SIZE, random_bundle

        stand_in = {k: v.default for k, v in inspect.signature(random_bundle).parameters.items()}
        assert (sizes.resolution, sizes.channel_base, sizes.channel_max, sizes.w_dim) == tuple(
            stand_in[k] for k in ("resolution", "channel_base", "channel_max", "w_dim"))
        assert sizes.encoder_channels == tuple(stand_in["encoder_channels"])
        assert sizes.output_size == DEFAULT_OUTPUT_SIZE
        assert (sizes.sample_rate, sizes.n_fft, sizes.hop_length, sizes.n_mels) == (
            LIVE_MEL.sample_rate, LIVE_MEL.n_fft, LIVE_MEL.hop_length, LIVE_MEL.n_mels)


def test_tiny_recipe_end_to_end_stops_on_time_and_resumes(tmp_path):
    from model.bundle import load_bundle

    out, work = tmp_path / "bundle", tmp_path / "work"
    # a budget that runs out during the data stage: the recipe stops before training and says so
    assert run_recipe("tiny", out, work, max_minutes=1e-5, steps=ONE_STEP) == EXIT_STOPPED
    state = read_state(work)
    assert state["stages"]["synthscapes"]["done"] and "clip" not in state["stages"]
    manifest = work / "synthscapes" / "manifest.csv"
    stamp = manifest.stat().st_mtime_ns

    # the same command again finishes the rest, without redoing the data (here with the device
    # named, as `recipe tiny --device cuda --amp` is run on a GPU: every model stage gets it)
    assert run_recipe("tiny", out, work, steps=ONE_STEP, device="cpu", amp=True) == 0
    assert manifest.stat().st_mtime_ns == stamp
    ran = read_state(work)["stages"]
    assert all(ran[s]["argv"][-3:] == ["--device", "cpu", "--amp"] for s in ("clip", "audio", "generator",
                                                                             "sound2video"))
    assert ran["eval"]["argv"][-2:] == ["--device", "cpu"] and "--amp" not in ran["eval"]["argv"]
    bundle = load_bundle(out)
    assert bundle.info.is_trained, bundle.info.trained
    assert bundle.info.resolution == 32 and bundle.info.mel.n_mels == 32
    report = json.loads((work / "eval" / "report.json").read_text())
    assert set(report["methods"]) == {"ours", "offsets", "both", "random_walk", "linear_interpolation",
                                      "loudness_walk"}
    assert report["judge"]["held_out_real"]["full"]["mean"] is not None  # the independent judge ran
    state = read_state(work)
    assert all(state["stages"][s]["done"] for s in recipe_stages(RECIPES["tiny"].sizes("default")))
    assert report["atlas_entry_classes"].startswith("real-frame classifiers")  # the eval steered as the show does

    # a third run has nothing to do
    t0 = time.monotonic()
    assert run_recipe("tiny", out, work, steps=ONE_STEP) == 0
    assert time.monotonic() - t0 < 5.0
    assert read_state(work)["stages"] == state["stages"]

    # a stage whose part is not marked trained (as after a stop) is run again and resumes
    from training.bundle_io import read_training_json

    doc = read_training_json(out)
    doc["parts"]["predictor"]["trained"] = False
    (out / "training.json").write_text(json.dumps(doc))
    (work / "eval" / "report.json").unlink()
    assert run_recipe("tiny", out, work, steps=ONE_STEP) == 0
    assert read_training_json(out)["parts"]["predictor"]["trained"]
    metrics = (work / "runs" / "sound2video" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(m)["step"] for m in metrics if json.loads(m)["prefix"] == "train"] == [1]  # resumed, not redone
    assert (work / "eval" / "report.json").is_file()

    # the work folder belongs to this recipe
    with pytest.raises(TrainingError, match="holds recipe"):
        run_recipe("default", out, work, scale="tiny")


def test_recipe_cli_rejects_bad_step_overrides(tmp_path):
    from training.cli import main

    assert main(["recipe", "tiny", "--out", str(tmp_path / "b"), "--steps", "bogus=3"]) == 1
