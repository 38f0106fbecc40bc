"""``aucgan train STAGE CONFIG``: build the stage's module, data, loggers and callbacks, then fit.

A run folder holds ``config.yaml`` (resolved), ``checkpoints/last.ckpt`` and ``step-NNNNNNN.ckpt``,
``logs/version_N/metrics.csv`` (one version per launch), ``tensorboard/version_N`` and ``images/``.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.strategies import DDPStrategy

from aucgan.build import world_parameters
from aucgan.config import Config, ConfigError, TrainerConfig, save_config
from aucgan.data.real import RealSettings, build_real_cache
from aucgan.loaders.common import read_checkpoint
from aucgan.train.au import AUTraining
from aucgan.train.callbacks import ImageGrid, StopAfter
from aucgan.train.checkpointing import LAST, AtomicCheckpointIO, PeriodicCheckpoint, StopOnSignal
from aucgan.train.coarse import CoarseTraining
from aucgan.train.data import DataSettings, FaceDataModule
from aucgan.train.detail import DetailTraining
from aucgan.train.module import StageModule

STAGES: dict[str, type[StageModule]] = {"au": AUTraining, "coarse": CoarseTraining, "detail": DetailTraining}


@dataclass(frozen=True)
class TrainResult:
    """Where a run wrote its outputs, and its last validation metrics."""

    out_dir: Path
    last_checkpoint: Path
    metrics: dict[str, float]
    stopped_at: int | None = None
    """The step ``trainer.stop_after`` ended the run at, before its ``trainer.steps`` (None: it ran all)."""


def run_directory(cfg: Config, stage: str, config_path: str | Path | None) -> Path:
    if cfg.trainer.out_dir:
        return Path(cfg.trainer.out_dir)
    name = Path(config_path).stem if config_path else "default"
    return Path("runs") / name / stage


def _strategy(cfg: Config, stage: str) -> str | DDPStrategy:
    if cfg.trainer.devices == 1:
        return "auto"
    backend = "nccl" if cfg.trainer.accelerator == "gpu" else "gloo"
    return DDPStrategy(process_group_backend=backend, find_unused_parameters=stage == "detail")


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Experiment logs directory.*")
    warnings.filterwarnings("ignore", message=".*module\\(s\\) in eval mode at the start of training.*")
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    # The data module resumes mid-pass from the checkpoint's steps_done (train/data.py), which Lightning
    # cannot see: its "dataloader is not resumable" warning would be false on every resume.
    warnings.filterwarnings("ignore", message=".*your dataloader is not resumable.*")


def real_settings(cfg: Config, stage: str, out: Path) -> RealSettings | None:
    """With ``coarse.backend=mediapipe``: the real-photo dataset of ``data.source`` (detail stage only),
    cached in the run folder, with refined targets when ``loss.refined_target`` or ``loss.refined_gradient``
    is above 0; ``None`` otherwise.

    Raises:
        ConfigError: another stage, no source, a source that is a synthetic dataset, or refined targets
            without photos (one line).
    """
    refined = cfg.loss.refined_target > 0 or cfg.loss.refined_gradient > 0
    if cfg.coarse.backend != "mediapipe":
        if refined:
            raise ConfigError(
                "loss.refined_target and loss.refined_gradient learn from the refinement of photos: train "
                "with coarse.backend=mediapipe data.source=PHOTOS, or set them to 0"
            )
        return None
    if stage != "detail":
        raise ConfigError(
            f"coarse.backend=mediapipe trains the detail stage on photos; `aucgan train {stage}` needs the "
            "synthetic world's labels: use coarse.backend=network"
        )
    source = cfg.data.source
    if not source:
        raise ConfigError(
            "coarse.backend=mediapipe trains on photos: set data.source=FOLDER (or a video, or a list)"
        )
    if (Path(source) / "manifest.json").is_file():
        raise ConfigError(
            f"data.source={source} is a synthetic dataset written by `aucgan synth`; train on it with "
            "coarse.backend=network, or give a folder of photos"
        )
    if cfg.loss.displacement_truth > 0:
        raise ConfigError("loss.displacement_truth needs synthetic ground truth; set it to 0 for photos")
    return RealSettings(
        source=source,
        cache=out / "real_faces.npz",
        image_size=cfg.render.image_size,
        images_per_identity=cfg.synth.images_per_identity,
        coarse=cfg.coarse,
        augment=cfg.augment,
        seed=cfg.seed,
        model=f"{cfg.face_model} n_albedo={cfg.model.n_albedo} uv_size={cfg.render.uv_size}",
        refine=cfg.refine if refined else None,
    )


def check_stop_after(trainer: TrainerConfig, done: int = 0) -> None:
    """Refuse, in one line, a ``trainer.stop_after`` that would not stop the run before its end, or that a
    resumed run (``done`` steps so far) has already reached.

    Raises:
        ConfigError: ``stop_after`` is not between ``done`` and ``steps``.
    """
    if not trainer.stop_after:
        return
    if trainer.stop_after >= trainer.steps:
        raise ConfigError(
            f"trainer.stop_after={trainer.stop_after} is not before trainer.steps={trainer.steps}; "
            "leave it 0 to run all the steps"
        )
    if trainer.stop_after <= done:
        raise ConfigError(
            f"trainer.stop_after={trainer.stop_after}: the run to resume is already at step {done}; "
            f"give a later step, or trainer.stop_after=0 to finish its {trainer.steps} steps"
        )


def check_resumable(last: Path, stage: str, steps: int) -> int:
    """Refuse, in one line, to resume a run that has nothing left to do or whose length would change;
    returns how many steps it has done.

    A run's learning-rate schedule and batch order are laid out over its ``trainer.steps``: a finished run
    cannot be stretched (Lightning would stop at once, having finished its one pass), and an interrupted
    one continues exactly only with the length it started with.

    Raises:
        ConfigError: the checkpoint's run finished all its steps, or was started with another
            ``trainer.steps``.
        CheckpointError: the checkpoint is unreadable.
    """
    state = read_checkpoint(last).get("aucgan", {})
    done = int(state.get("steps_done", 0))
    planned = state.get("config", {}).get("trainer", {}).get("steps", steps)
    if done >= planned:
        further = f"trainer.start_from={last} " if stage != "detail" else ""
        raise ConfigError(
            f"{last}: this run finished all its {done} steps; resume=true only continues an interrupted run. "
            f"To train further, start a new one: {further}trainer.out_dir=NEW_FOLDER"
        )
    if planned != steps:
        raise ConfigError(
            f"{last}: this run was started with trainer.steps={planned} (its schedule and batch order depend "
            f"on it); resume it with trainer.steps={planned}"
        )
    return done


def train(stage: str, cfg: Config, config_path: str | Path | None = None) -> TrainResult:
    """Train ``stage`` (``"au"``, ``"coarse"`` or ``"detail"``) as ``cfg`` says; returns where it went.

    Raises:
        ConfigError: one line, for a run folder that already holds a run (without ``resume=true``), a
            resume with nothing to resume (see :func:`check_resumable`), or a missing asset.
        TrainingInterrupted: Ctrl-C or SIGTERM stopped the run after a step, ``last.ckpt`` saved at it
            (:class:`~aucgan.train.checkpointing.StopOnSignal`).
        TrainingStopped: too many non-finite steps in a row.
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; valid: {', '.join(STAGES)}")
    if cfg.coarse.backend == "auto":  # the synthetic world: the coarse network, its truth kept
        from aucgan.stages.landmark_fit import resolve_backend

        backend = resolve_backend(cfg.coarse, cfg.face_model.kind, photos=False).backend
        cfg = dataclasses.replace(cfg, coarse=dataclasses.replace(cfg.coarse, backend=backend))
    out = run_directory(cfg, stage, config_path)
    last = out / "checkpoints" / LAST
    if cfg.resume and not last.is_file():
        raise ConfigError(f"resume=true but {last} does not exist; start the run without resume=true")
    done = check_resumable(last, stage, cfg.trainer.steps) if cfg.resume else 0
    check_stop_after(cfg.trainer, done)
    if not cfg.resume and last.exists():
        raise ConfigError(
            f"{out} already holds a run; pass resume=true to continue it, or trainer.out_dir=NEW_FOLDER"
        )
    if cfg.trainer.start_from and stage == "detail":
        raise ConfigError(
            "trainer.start_from is for `aucgan train au|coarse` only, not detail; leave it empty"
        )
    real = real_settings(cfg, stage, out)
    _quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    trainer_cfg = cfg.trainer
    module = STAGES[stage](cfg)
    if real is not None:
        build_real_cache(real, module.coarse)
    datamodule = FaceDataModule(
        DataSettings(
            world=world_parameters(cfg),
            source=cfg.data.source,
            n_train=cfg.data.n_train,
            n_val=cfg.data.n_val,
            identities_per_batch=cfg.data.identities_per_batch,
            workers=cfg.data.workers,
            seed=cfg.seed,
            steps=trainer_cfg.steps,
            au_balance=cfg.data.au_balance if stage == "au" else 0.0,
            real=real,
            shard_cache=cfg.data.shard_cache,
        )
    )
    stop = StopOnSignal(out / "checkpoints", trainer_cfg.steps)
    stop_after = StopAfter(trainer_cfg.stop_after)
    callbacks: list[L.Callback] = [
        PeriodicCheckpoint(out / "checkpoints", trainer_cfg.checkpoint_every, trainer_cfg.stop_after),
        ImageGrid(out / "images", trainer_cfg.image_every),
        stop,
    ]
    if trainer_cfg.stop_after:  # before the end only (check_stop_after)
        callbacks.append(stop_after)
    if trainer_cfg.progress:
        callbacks.append(TQDMProgressBar(refresh_rate=max(1, min(trainer_cfg.log_every, 10))))
    trainer = L.Trainer(
        accelerator=trainer_cfg.accelerator,
        devices=trainer_cfg.devices,
        strategy=_strategy(cfg, stage),
        precision=trainer_cfg.precision,
        max_epochs=1,
        max_steps=-1,
        val_check_interval=min(trainer_cfg.val_every, trainer_cfg.steps),
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        log_every_n_steps=trainer_cfg.log_every,
        logger=[CSVLogger(out, name="logs"), TensorBoardLogger(out, name="tensorboard")],
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=trainer_cfg.progress,
        enable_model_summary=False,
        use_distributed_sampler=False,
        deterministic=trainer_cfg.accelerator == "cpu",
        plugins=[AtomicCheckpointIO()],
        default_root_dir=out,
    )
    if trainer.is_global_zero:
        save_config(cfg, out)
    with stop.listening():
        trainer.fit(module, datamodule=datamodule, ckpt_path=last if cfg.resume else None)
    stopped_at = stop_after.stopped_at
    if trainer_cfg.steps % trainer_cfg.val_every and stopped_at is None:  # stopping early validated already
        trainer.validate(module, datamodule=datamodule, verbose=False)
    metrics = {
        name: float(value) for name, value in trainer.callback_metrics.items() if name.startswith("val")
    }
    return TrainResult(out_dir=out, last_checkpoint=last, metrics=metrics, stopped_at=stopped_at)


__all__ = ["STAGES", "TrainResult", "check_resumable", "check_stop_after", "run_directory", "train"]
