"""Tests of :mod:`aucgan.build`: the AU net a config names keeps the input size it was trained with."""

from __future__ import annotations

import dataclasses

import pytest

from aucgan.build import au_net, new_au_net
from aucgan.config import Config, ConfigError
from aucgan.loaders.opengraphau import save_au_net


def with_au(cfg: Config, input_size: int, path: str = "") -> Config:
    return dataclasses.replace(
        cfg,
        model=dataclasses.replace(cfg.model, au_input_size=input_size),
        assets=dataclasses.replace(cfg.assets, au_net=path),
    )


def test_a_fresh_au_net_reads_images_at_the_configured_size(tiny_config):
    assert new_au_net(with_au(tiny_config, 96)).input_size == 96
    assert au_net(with_au(tiny_config, 0)).input_size == 0


def test_an_au_net_file_at_another_input_size_is_refused_in_one_line(tiny_config, tmp_path):
    path = save_au_net(new_au_net(with_au(tiny_config, 96)), tmp_path / "au.ckpt")
    assert au_net(with_au(tiny_config, 96, str(path))).input_size == 96
    with pytest.raises(ConfigError) as info:
        au_net(with_au(tiny_config, 0, str(path)))
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "set model.au_input_size=96" in message
