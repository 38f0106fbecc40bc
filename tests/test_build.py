"""Tests of :mod:`aucgan.build`: the AU net a config names keeps the input size it was trained with; a detail
stage without an encoder builds, reconstructs and round-trips through a weights file."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from aucgan.build import au_net, coarse_stage, detail_stage, new_au_net
from aucgan.config import Config, ConfigError
from aucgan.loaders.opengraphau import save_au_net
from aucgan.nets.au_net import MEFARG
from aucgan.nets.detail_encoder import NoDetailCode
from aucgan.reconstruct import Reconstructor
from aucgan.weights import save_weights


def with_model(cfg: Config, **changes: object) -> Config:
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **changes))


def with_au(cfg: Config, input_size: int, path: str = "") -> Config:
    return dataclasses.replace(
        with_model(cfg, au_input_size=input_size), assets=dataclasses.replace(cfg.assets, au_net=path)
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


def test_a_uv_unet_without_a_detail_encoder_reads_the_photo_alone(tiny_config, tmp_path):
    cfg = with_model(tiny_config, detail_encoder="none", detail_decoder="uv-unet")
    torch.manual_seed(0)
    coarse = coarse_stage(cfg)
    au = MEFARG(cfg.model.au_backbone, cfg.model.au_stage)
    detail = detail_stage(cfg, coarse.uv_space, au, coarse.face_model.n_expression)
    assert isinstance(detail.encoder, NoDetailCode)
    assert not any(name.startswith("encoder.") for name in detail.state_dict())
    reconstructor = Reconstructor(coarse, detail, cfg, "random")
    images = torch.rand(2, 3, cfg.render.image_size, cfg.render.image_size)
    with torch.inference_mode():
        rec = reconstructor(images, refine=False)
    assert not rec.detail.detail_code.any()
    assert rec.detail.uv_displacement.shape[0] == 2 and torch.isfinite(rec.detail.uv_displacement).all()
    assert rec.detail.uv_displacement.abs().max() > 0.02  # a random decoder: the comparison below can fail
    path = save_weights(tmp_path / "w.safetensors", {"coarse": coarse, "detail": detail}, cfg, provenance="t")
    loaded = Reconstructor.load(path)
    assert isinstance(loaded.detail.encoder, NoDetailCode)
    with torch.inference_mode():
        again = loaded(images, refine=False)
    # float16 weights on disk: equal to rounding
    torch.testing.assert_close(again.detail.uv_displacement, rec.detail.uv_displacement, atol=2e-3, rtol=0)


@pytest.mark.parametrize(
    ("decoder", "paths"), [("concat-1x1", ("photo", "au", "latent")), ("uv-unet", ("au", "latent"))]
)
def test_no_detail_encoder_with_a_decoder_blind_to_the_photo_is_refused_in_one_line(
    tiny_config, decoder, paths
):
    cfg = with_model(tiny_config, detail_encoder="none", detail_decoder=decoder, detail_paths=paths)
    coarse = coarse_stage(cfg)
    with pytest.raises(ConfigError) as info:
        detail_stage(cfg, coarse.uv_space, None, coarse.face_model.n_expression)
    message = str(info.value)
    assert "\n" not in message and "model.detail_encoder=conv" in message and decoder in message
