"""End-to-end training runs on the tiny preset: the CLI as a user types it, every loss logged, held-out
error after training vs at initialisation, exact resume, and a 2-process DDP run."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from aucgan.build import world_parameters
from aucgan.cli import main
from aucgan.config import Config, ConfigError, LossConfig, load_config, preset_path
from aucgan.train.checkpointing import LAST
from aucgan.train.data import DataSettings, FaceDataModule
from aucgan.train.detail import DetailTraining
from aucgan.train.run import real_settings, train

REPO = Path(__file__).resolve().parents[2]
TINY = preset_path("synthetic-tiny")
QUIET = ["trainer.progress=false"]


def read_metrics(run: Path, version: int = 0) -> list[dict[str, str]]:
    with open(run / "logs" / f"version_{version}" / "metrics.csv", newline="") as stream:
        return list(csv.DictReader(stream))


def series(rows: list[dict[str, str]], name: str) -> dict[int, float]:
    return {int(row["step"]): float(row[name]) for row in rows if row.get(name)}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The three stages of the tiny preset trained by the CLI exactly as the README says, in a fresh
    working folder (the preset's asset paths are relative to it)."""
    work = tmp_path_factory.mktemp("tiny")
    previous = Path.cwd()
    os.chdir(work)
    try:
        for stage in ("au", "coarse", "detail"):
            assert main(["train", stage, str(TINY), *QUIET]) == 0
    finally:
        os.chdir(previous)
    return work / "runs" / "synthetic-tiny"


def trained_assets(runs: Path) -> list[str]:
    """Overrides that put the tiny runs' AU net and coarse stage in front of the detail stage."""
    return [
        f"assets.au_net={runs / 'au/checkpoints/last.ckpt'}",
        f"assets.coarse={runs / 'coarse/checkpoints/last.ckpt'}",
    ]


def expected_detail_losses(cfg: Config) -> set[str]:
    weights = cfg.loss
    names = {"photo_detail", "z_reg", "z_diff", "z_sym", "au_score", "au_feature", "adversarial"}
    names = {name for name in names if getattr(weights, name) > 0}
    if weights.detail_consistency > 0 and cfg.synth.images_per_identity > 1:
        names.add("detail_consistency")
    if weights.mrf > 0 and cfg.assets.vgg19:
        names.add("mrf")
    if weights.adversarial > 0:
        names.add("d_adversarial")
    return names


def signal_during_au_step(monkeypatch: pytest.MonkeyPatch, number: int, step: int) -> None:
    """Make ``aucgan train au`` send this process signal ``number`` during training step ``step`` (from the
    step's loss, so it lands inside the step whatever the machine's speed)."""
    from aucgan.train import au as au_training

    real = au_training.weighted_bce
    calls = {"n": 0}

    def signalling(probabilities, labels, positive_weight):
        calls["n"] += 1
        if calls["n"] == step:
            os.kill(os.getpid(), number)
        return real(probabilities, labels, positive_weight)

    monkeypatch.setattr(au_training, "weighted_bce", signalling)


def stop_training_process(command: list[str], out: Path, number: int) -> int:
    """Start ``command`` (an ``aucgan train`` writing to ``out`` with ``trainer.checkpoint_every=2``) in a
    process group of its own, send the whole group signal ``number`` once step 2 is saved (as a terminal,
    ``timeout`` or a job scheduler would), and check it ends with status 128 + ``number``, no traceback, one
    "stopped by" line and a ``last.ckpt`` at the step that line names; returns that step."""
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    deadline = time.monotonic() + 300
    while not (out / "checkpoints" / "step-0000002.ckpt").is_file():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1][-3000:]
        time.sleep(0.2)
    os.killpg(process.pid, number)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 128 + number, stderr[-3000:]
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.startswith("aucgan train:")]
    name = signal.Signals(number).name
    assert len(lines) == 1 and lines[0].startswith(f"aucgan train: stopped by {name} after step "), stderr[
        -3000:
    ]
    steps = int(lines[0].split("after step ")[1].split()[0])
    assert torch.load(out / "checkpoints" / LAST, weights_only=True)["aucgan"]["steps_done"] == steps
    return steps


def test_tiny_preset_trains_every_stage_and_logs_every_loss(tiny_runs: Path) -> None:
    cfg = load_config(Config, TINY)
    for stage in ("au", "coarse", "detail"):
        run = tiny_runs / stage
        assert (run / "checkpoints" / LAST).is_file()
        assert (run / "config.yaml").is_file()
        assert list((run / "tensorboard").glob("version_0/events.out.tfevents.*"))
    rows = read_metrics(tiny_runs / "detail")
    for name in expected_detail_losses(cfg):
        values = series(rows, f"train/{name}")
        assert len(values) == cfg.trainer.steps, name
        assert all(torch.isfinite(torch.tensor(list(values.values())))), name
    assert series(rows, "val/displacement_mae")
    assert sorted((tiny_runs / "detail" / "images").glob("step-*.png"))
    assert series(read_metrics(tiny_runs / "au"), "val/f1_mean")
    assert series(read_metrics(tiny_runs / "coarse"), "val/landmark_error_px")


def test_every_schedule_steps_once_per_training_step(tiny_runs: Path) -> None:
    """Schedules are laid out in steps: after the run, each (the detail stage has the generator's and the
    discriminator's) has stepped exactly ``trainer.steps`` times, as has each optimiser."""
    steps = load_config(Config, TINY).trainer.steps
    for stage, count in (("au", 1), ("coarse", 1), ("detail", 2)):
        checkpoint = torch.load(
            tiny_runs / stage / "checkpoints" / LAST, map_location="cpu", weights_only=True
        )
        assert checkpoint["aucgan"]["steps_done"] == steps
        assert [s["last_epoch"] for s in checkpoint["lr_schedulers"]] == [steps] * count, stage
        for optimiser in checkpoint["optimizer_states"]:
            assert {float(state["step"]) for state in optimiser["state"].values()} == {steps}, stage


def test_defaults_name_every_detail_loss() -> None:
    assert {"photo_detail", "z_reg", "z_diff", "z_sym", "au_score", "adversarial"} <= set(vars(LossConfig()))


def held_out_displacement_error(module: DetailTraining, cfg: Config) -> float:
    data = FaceDataModule(
        DataSettings(
            world_parameters(cfg), "", 0, cfg.data.n_val, cfg.data.identities_per_batch, 0, cfg.seed, 1
        )
    )
    module.eval()
    errors = []
    with torch.no_grad():
        for batch in data.val_dataloader():
            errors.append(module.held_out_errors(batch)["displacement_mae"])
    return float(torch.stack(errors).mean())


def test_held_out_displacement_error_drops_with_training(tiny_runs: Path) -> None:
    cfg = load_config(Config, TINY, trained_assets(tiny_runs))
    L.seed_everything(cfg.seed, verbose=False)
    initial = DetailTraining(cfg)
    trained = DetailTraining(cfg)
    checkpoint = torch.load(tiny_runs / "detail/checkpoints" / LAST, map_location="cpu", weights_only=True)
    trained.load_state_dict(checkpoint["state_dict"], strict=True)
    before = held_out_displacement_error(initial, cfg)
    after = held_out_displacement_error(trained, cfg)
    assert after < 0.8 * before, (before, after)


def test_resume_reproduces_the_uninterrupted_run(tiny_runs: Path, tmp_path: Path) -> None:
    assets = trained_assets(tiny_runs)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    cfg = load_config(Config, TINY, [*QUIET, *assets, f"trainer.out_dir={straight}"])
    train("detail", cfg)
    (resumed / "checkpoints").mkdir(parents=True)
    half = cfg.trainer.checkpoint_every
    shutil.copy(straight / "checkpoints" / f"step-{half:07d}.ckpt", resumed / "checkpoints" / LAST)
    train("detail", load_config(Config, TINY, [*QUIET, *assets, f"trainer.out_dir={resumed}", "resume=true"]))
    full, tail = read_metrics(straight), read_metrics(resumed)
    compared = 0
    for name in ("train/g_total", "train/d_adversarial", "train/photo_detail", "train/au_score"):
        expected, actual = series(full, name), series(tail, name)
        later = {step: value for step, value in expected.items() if step > min(actual)}
        assert len(actual) == cfg.trainer.steps - half
        assert set(actual) == set(later) | {min(actual)}
        for step, value in actual.items():
            assert value == pytest.approx(expected[step], abs=1e-5, rel=1e-5), (name, step)
            compared += 1
    assert compared == 4 * (cfg.trainer.steps - half)


def test_resume_refuses_a_finished_run_and_a_changed_length(tiny_runs: Path, tmp_path: Path) -> None:
    assets = trained_assets(tiny_runs)
    cfg = load_config(Config, TINY)
    steps, half = cfg.trainer.steps, cfg.trainer.checkpoint_every
    finished, interrupted = tmp_path / "finished", tmp_path / "interrupted"
    for run, checkpoint in ((finished, LAST), (interrupted, f"step-{half:07d}.ckpt")):
        (run / "checkpoints").mkdir(parents=True)
        shutil.copy(tiny_runs / "detail" / "checkpoints" / checkpoint, run / "checkpoints" / LAST)
    longer = [*QUIET, *assets, "resume=true", f"trainer.steps={2 * steps}"]
    with pytest.raises(ConfigError, match=f"finished all its {steps} steps.*trainer.out_dir=NEW_FOLDER"):
        train("detail", load_config(Config, TINY, [*longer, f"trainer.out_dir={finished}"]))
    with pytest.raises(ConfigError, match=f"started with trainer.steps={steps}.*resume it with"):
        train("detail", load_config(Config, TINY, [*longer, f"trainer.out_dir={interrupted}"]))
    for run in (finished, interrupted):
        assert sorted(path.name for path in run.iterdir()) == ["checkpoints"]


def test_resuming_a_finished_au_run_points_to_start_from(tiny_runs: Path, tmp_path: Path) -> None:
    run = tmp_path / "au"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(tiny_runs / "au" / "checkpoints" / LAST, run / "checkpoints" / LAST)
    cfg = load_config(Config, TINY, [*QUIET, "resume=true", f"trainer.out_dir={run}"])
    with pytest.raises(ConfigError, match=r"trainer\.start_from=.*last\.ckpt trainer\.out_dir=NEW_FOLDER"):
        train("au", cfg)


def test_stop_after_ends_validated_and_resumes_to_the_straight_run(
    tiny_runs: Path, tmp_path: Path, caplog
) -> None:
    """``trainer.stop_after`` ends an AU run early (not on a validation or checkpoint step), validated and
    checkpointed there; resuming it finishes the same run as the uninterrupted one."""
    run = tmp_path / "au"
    steps, stop = load_config(Config, TINY).trainer.steps, 4
    with caplog.at_level("INFO", logger="aucgan"):
        assert (
            main(["train", "au", str(TINY), *QUIET, f"trainer.out_dir={run}", f"trainer.stop_after={stop}"])
            == 0
        )
    assert f"stopped after step {stop} of {steps} (trainer.stop_after)" in caplog.text
    assert torch.load(run / "checkpoints" / LAST, weights_only=True)["aucgan"]["steps_done"] == stop
    first = read_metrics(run)
    assert max(series(first, "train/au_bce")) == stop - 1
    assert list(series(first, "val/f1_mean")) == [stop - 1]
    with pytest.raises(ConfigError, match=f"already at step {stop}; give a later step"):
        train(
            "au",
            load_config(
                Config, TINY, [*QUIET, f"trainer.out_dir={run}", "resume=true", f"trainer.stop_after={stop}"]
            ),
        )
    assert main(["train", "au", str(TINY), *QUIET, f"trainer.out_dir={run}", "resume=true"]) == 0
    straight, resumed = (
        series(read_metrics(tiny_runs / "au"), "train/au_bce"),
        series(read_metrics(run, 1), "train/au_bce"),
    )
    assert sorted(resumed) == [step for step in sorted(straight) if step >= stop]
    for step, value in resumed.items():
        assert value == pytest.approx(straight[step], abs=1e-5, rel=1e-5), step


def test_stop_after_at_or_past_the_end_is_one_line(tmp_path: Path) -> None:
    steps = load_config(Config, TINY).trainer.steps
    cfg = load_config(
        Config, TINY, [*QUIET, f"trainer.out_dir={tmp_path / 'au'}", f"trainer.stop_after={steps}"]
    )
    with pytest.raises(ConfigError, match=f"trainer.stop_after={steps} is not before trainer.steps={steps}"):
        train("au", cfg)
    assert not (tmp_path / "au").exists()


def test_ddp_two_processes_on_cpu(tiny_runs: Path, tmp_path: Path) -> None:
    """Two gloo processes, with the trained coarse network in front of the detail stage."""
    out = tmp_path / "ddp"
    command = [
        sys.executable,
        "-m",
        "aucgan",
        "train",
        "detail",
        str(TINY),
        *QUIET,
        "trainer.devices=2",
        "trainer.steps=4",
        "trainer.val_every=4",
        "trainer.checkpoint_every=4",
        f"trainer.out_dir={out}",
        *trained_assets(tiny_runs),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "checkpoints" / LAST).is_file()
    rows = read_metrics(out)
    assert len(series(rows, "train/g_total")) == 4


def test_ctrl_c_stops_every_ddp_process_after_the_same_step_with_one_line(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "aucgan", "train", "au", str(TINY), *QUIET, "trainer.devices=2",
        "trainer.steps=400", "trainer.checkpoint_every=2", "trainer.val_every=1000", "data.workers=1",
        f"trainer.out_dir={out}",
    ]  # fmt: skip
    stop_training_process(command, out, signal.SIGINT)  # Ctrl-C: every process of the group gets it


def test_a_run_that_keeps_producing_nan_stops_with_one_line_and_an_intact_checkpoint(tmp_path, monkeypatch):
    from aucgan.train import au as au_training

    real = au_training.weighted_bce
    calls = {"n": 0}

    def nan_after_three_steps(probabilities, labels, positive_weight):
        calls["n"] += 1
        loss = real(probabilities, labels, positive_weight)
        return loss * float("nan") if calls["n"] > 3 else loss

    monkeypatch.setattr(au_training, "weighted_bce", nan_after_three_steps)
    out = tmp_path / "run"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["train", "au", str(TINY), *QUIET, f"trainer.out_dir={out}", "trainer.steps=20",
                       "trainer.checkpoint_every=2", "trainer.max_bad_steps=3",
                       "trainer.val_every=100"])  # fmt: skip
    assert status == 1
    lines = [line for line in err.getvalue().splitlines() if line.startswith("aucgan train:")]
    assert len(lines) == 1
    assert lines[0].startswith(
        "aucgan train: stopped at step 6: 3 steps in a row had non-finite au_bce, gradients (those updates "
        "were not applied; the last checkpoint holds the last good weights)"
    )
    assert "trainer.out_dir=NEW" in lines[0]
    checkpoint = torch.load(out / "checkpoints" / LAST, weights_only=True)
    assert checkpoint["aucgan"]["steps_done"] == 4 and checkpoint["aucgan"]["bad_steps"] == 1
    assert all(
        torch.isfinite(value).all()
        for value in checkpoint["state_dict"].values()
        if value.is_floating_point()
    )
    rows = read_metrics(out)
    assert max(series(rows, "train/bad_steps").values()) >= 1


def test_detail_trains_on_real_photos_with_the_mediapipe_backend(
    mediapipe_installed, real_photos, tmp_path: Path
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for path in real_photos.values():
        shutil.copy(path, photos / path.name)
    run = tmp_path / "run"
    shipped = REPO / "src" / "aucgan" / "pretrained" / "synthetic.safetensors"
    overrides = [
        "coarse.backend=mediapipe", f"data.source={photos}", f"assets.au_net={shipped}",
        f"trainer.out_dir={run}", "data.identities_per_batch=1", "trainer.steps=4", "trainer.val_every=4",
        "trainer.image_every=4", *QUIET,
    ]  # fmt: skip
    assert main(["train", "detail", str(TINY), *overrides]) == 0
    cfg = load_config(Config, TINY, overrides)
    rows = read_metrics(run)
    for name in expected_detail_losses(cfg):
        values = series(rows, f"train/{name}")
        assert len(values) == 4 and all(torch.isfinite(torch.tensor(list(values.values())))), name
    assert series(rows, "val/photo_detail_l1") and series(rows, "val/photo_flat_l1")
    assert (run / "real_faces.npz").is_file() and sorted((run / "images").glob("step-*.png"))
    # What was trained on photos reconstructs photos (it has no coarse encoder: the backend comes with it).
    checkpoint = run / "checkpoints" / LAST
    out = tmp_path / "faces"
    assert (
        main(["reconstruct", str(real_photos["astronaut"]), "--out", str(out), "--weights", str(checkpoint)])
        == 0
    )
    assert (out / "astronaut" / "codes.npz").is_file()
    packed = tmp_path / "mine.safetensors"
    assert (
        main(
            [
                "pack",
                str(TINY),
                "coarse.backend=mediapipe",
                "--checkpoint",
                str(checkpoint),
                "--out",
                str(packed),
            ]
        )
        == 0
    )
    assert (
        main(["reconstruct", str(real_photos["grace_hopper"]), "--out", str(out), "--weights", str(packed)])
        == 0
    )
    assert (
        main(
            [
                "reconstruct",
                str(real_photos["grace_hopper"]),
                "--out",
                str(tmp_path / "x"),
                "--weights",
                str(packed),
                "coarse.backend=network",
            ]
        )
        == 2
    )


@pytest.mark.parametrize(
    ("stage", "overrides", "message"),
    [
        ("au", ["data.source=photos"], "trains the detail stage on photos"),
        ("detail", [], "set data.source=FOLDER"),
        ("detail", ["data.source={dataset}"], "is a synthetic dataset"),
        ("detail", ["data.source=photos", "loss.displacement_truth=1"], "needs synthetic ground truth"),
    ],
)
def test_mediapipe_training_settings_that_cannot_work_are_one_line(
    tmp_path, capsys, stage, overrides, message
):
    dataset = tmp_path / "synth"
    dataset.mkdir()
    (dataset / "manifest.json").write_text("{}")
    items = [item.format(dataset=dataset) for item in overrides]
    args = [
        "train",
        stage,
        str(TINY),
        "coarse.backend=mediapipe",
        f"trainer.out_dir={tmp_path / 'run'}",
        *items,
    ]
    assert main([*args, *QUIET]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_detail_learns_from_refined_targets_on_photos(mediapipe_installed, real_photos, tmp_path) -> None:
    run = tmp_path / "run"
    shipped = REPO / "src" / "aucgan" / "pretrained" / "synthetic.safetensors"
    overrides = [
        "coarse.backend=mediapipe", f"data.source={real_photos['grace_hopper']}", f"assets.au_net={shipped}",
        f"trainer.out_dir={run}", "data.identities_per_batch=1", "trainer.steps=2", "trainer.val_every=2",
        "trainer.image_every=2", "loss.refined_target=1", "loss.refined_gradient=0.5", "refine.steps=5",
        *QUIET,
    ]  # fmt: skip
    assert main(["train", "detail", str(TINY), *overrides]) == 0
    rows = read_metrics(run)
    for name in ("refined_target", "refined_gradient"):
        values = series(rows, f"train/{name}")
        assert len(values) == 2 and all(torch.isfinite(torch.tensor(list(values.values())))), name
    cfg = load_config(Config, TINY, overrides)
    with np.load(run / "real_faces.npz") as data:
        size = cfg.render.uv_size
        assert data["refined"].shape == (cfg.synth.images_per_identity, 1, size, size)
        assert np.abs(data["refined"]).max() > 0
    assert not (run / "real_faces.npz.refined-parts").exists()


def test_refined_targets_are_asked_of_the_photo_cache_and_need_photos(tmp_path, capsys) -> None:
    photos = ["coarse.backend=mediapipe", "data.source=photos"]
    on = load_config(Config, TINY, [*photos, "loss.refined_target=1"])
    assert real_settings(on, "detail", tmp_path).refine == on.refine
    gradient_only = load_config(Config, TINY, [*photos, "loss.refined_gradient=0.5", "refine.steps=7"])
    assert real_settings(gradient_only, "detail", tmp_path).refine.steps == 7
    assert real_settings(load_config(Config, TINY, photos), "detail", tmp_path).refine is None
    args = ["train", "detail", str(TINY), "loss.refined_target=1", f"trainer.out_dir={tmp_path / 'run'}"]
    assert main([*args, "coarse.backend=network", *QUIET]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "loss.refined_target" in err[0] and "coarse.backend=mediapipe" in err[0]


def test_lightning_s_false_resume_warning_is_silenced_and_others_are_not() -> None:
    """The data module resumes mid-pass itself; Lightning, which cannot see that, warns on every resume."""
    from lightning.pytorch.utilities.warnings import PossibleUserWarning

    from aucgan.train.run import _quiet_lightning

    resume = (
        "You're resuming from a checkpoint that ended before the epoch ended and your dataloader is not "
        "resumable. This can cause unreliable results if further training is done."
    )
    other = "The number of training batches (3) is smaller than the logging interval"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        _quiet_lightning()
        for message in (resume, other):
            warnings.warn(message, PossibleUserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == [other]


def test_ctrl_c_stops_after_the_step_with_a_checkpoint_that_resumes_exactly(tmp_path, monkeypatch):
    common = [*QUIET, "trainer.steps=8", "trainer.checkpoint_every=100", "trainer.val_every=100"]
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    assert main(["train", "au", str(TINY), *common, f"trainer.out_dir={straight}"]) == 0
    signal_during_au_step(monkeypatch, signal.SIGINT, step=3)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["train", "au", str(TINY), *common, f"trainer.out_dir={stopped}"])
    assert status == 128 + signal.SIGINT
    lines = [line for line in err.getvalue().splitlines() if line.startswith("aucgan train:")]
    assert lines == [
        f"aucgan train: stopped by SIGINT after step 3 of 8; {stopped / 'checkpoints' / LAST} holds that "
        "step: continue with the same command and resume=true"
    ]
    assert "Traceback" not in err.getvalue()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert torch.load(stopped / "checkpoints" / LAST, weights_only=True)["aucgan"]["steps_done"] == 3
    monkeypatch.undo()
    assert main(["train", "au", str(TINY), *common, f"trainer.out_dir={stopped}", "resume=true"]) == 0
    expected, resumed = (
        series(read_metrics(straight), "train/au_bce"),
        series(read_metrics(stopped, 1), "train/au_bce"),
    )
    before = series(read_metrics(stopped, 0), "train/au_bce")
    assert sorted(resumed) == [step for step in sorted(expected) if step >= 3]
    assert sorted(set(before) | set(resumed)) == sorted(expected), "a step's metrics were lost at the stop"
    for step, value in resumed.items():
        assert value == pytest.approx(expected[step], abs=1e-5, rel=1e-5), step


def test_sigterm_with_a_data_worker_stops_with_one_line_and_a_checkpoint(tmp_path: Path) -> None:
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "aucgan", "train", "au", str(TINY), *QUIET, "trainer.steps=400",
        "trainer.checkpoint_every=2", "trainer.val_every=1000", "data.workers=1", f"trainer.out_dir={out}",
    ]  # fmt: skip
    steps = stop_training_process(command, out, signal.SIGTERM)  # the data worker gets it too
    assert 2 <= steps < 400


def test_a_signal_during_the_last_step_keeps_the_trained_run_and_says_it_is_finished(tmp_path, monkeypatch):
    signal_during_au_step(monkeypatch, signal.SIGTERM, step=4)
    out = tmp_path / "run"
    common = [*QUIET, "trainer.steps=4", "trainer.checkpoint_every=100", "trainer.val_every=100"]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        status = main(["train", "au", str(TINY), *common, f"trainer.out_dir={out}"])
    assert status == 128 + signal.SIGTERM
    assert "Traceback" not in err.getvalue()
    lines = [line for line in err.getvalue().splitlines() if line.startswith("aucgan train:")]
    assert lines == [
        f"aucgan train: stopped by SIGTERM after the last step (4); {out / 'checkpoints' / LAST} holds the "
        "trained run (its closing validation did not run)"
    ]
    assert torch.load(out / "checkpoints" / LAST, weights_only=True)["aucgan"]["steps_done"] == 4
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
