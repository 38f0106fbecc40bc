"""The coarse stage's training module: fine-tuning from an earlier coarse run's encoder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from aucgan.config import Config, ConfigError, load_config, preset_path
from aucgan.loaders.common import CheckpointError
from aucgan.train.coarse import CoarseTraining
from aucgan.train.run import train

TINY = preset_path("synthetic-tiny")


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(Config, TINY)


def starting_from(cfg: Config, path: Path | str) -> Config:
    return dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, start_from=str(path)))


def test_coarse_training_starts_from_the_encoder_of_trainer_start_from(cfg, tmp_path):
    earlier = CoarseTraining(cfg)
    torch.manual_seed(0)
    for parameter in earlier.stage.encoder.parameters():
        torch.nn.init.normal_(parameter)
    state = earlier.state_dict()
    # A changed world: the earlier run's face model differs; the new run keeps the config's own.
    state["stage.face_model.au_basis"] = state["stage.face_model.au_basis"] * 3
    torch.save({"aucgan": {"stage": "coarse"}, "state_dict": state}, tmp_path / "coarse.ckpt")

    fresh = CoarseTraining(cfg)
    started = CoarseTraining(starting_from(cfg, tmp_path / "coarse.ckpt"))
    for name, tensor in earlier.stage.encoder.state_dict().items():
        assert torch.equal(started.stage.encoder.state_dict()[name], tensor), name
    first = "network.encoder.conv1.weight"
    assert not torch.equal(fresh.stage.encoder.state_dict()[first], started.stage.encoder.state_dict()[first])
    assert torch.equal(started.stage.face_model.au_basis, fresh.stage.face_model.au_basis)


def test_coarse_start_from_refuses_a_file_without_a_coarse_encoder(cfg, tmp_path):
    torch.save({"aucgan": {"stage": "au"}, "state_dict": {"net.x": torch.zeros(1)}}, tmp_path / "au.ckpt")
    with pytest.raises(CheckpointError, match=r"au\.ckpt \[trainer\.start_from\]: holds no coarse encoder"):
        CoarseTraining(starting_from(cfg, tmp_path / "au.ckpt"))


def test_start_from_is_refused_for_the_detail_stage(cfg, tmp_path):
    start_cfg = starting_from(cfg, "coarse.ckpt")
    start_cfg = dataclasses.replace(
        start_cfg, trainer=dataclasses.replace(start_cfg.trainer, out_dir=str(tmp_path))
    )
    with pytest.raises(
        ConfigError, match=r"trainer\.start_from is for `aucgan train au\|coarse` only, not detail"
    ):
        train("detail", start_cfg)
