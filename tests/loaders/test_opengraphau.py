import pytest
import torch

from aucgan.loaders.common import CheckpointError
from aucgan.loaders.opengraphau import detect_architecture, load_au_net, save_au_net
from aucgan.nets.au_net import MEFARG


def randomised(net: MEFARG, seed: int) -> MEFARG:
    """Every parameter and BatchNorm statistic moved away from its initial value, so skipped keys show."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
        for module in net.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                shape = module.running_mean.shape
                module.running_mean.copy_(0.1 * torch.randn(shape, generator=generator))
                module.running_var.copy_(0.8 + 0.4 * torch.rand(shape, generator=generator))
    return net.eval()


def published_layout(net: MEFARG, prefix: str = "module.") -> dict:
    return {"state_dict": {prefix + k: v for k, v in net.state_dict().items()}}


def saved(tmp_path, obj, name="OpenGprahAU.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def one_line_error(path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_au_net(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


IMAGES = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def assert_same_outputs(got, expected) -> None:
    """``got`` and ``expected`` (:class:`AUOutput`) of two nets holding the same weights, on the same images.

    Equal to float32 rounding, not bit for bit: a loaded net is frozen (its parameters need no gradients),
    and on some CPUs (AVX-512 FP16 ones) PyTorch's convolutions then run another oneDNN kernel, which sums
    in another order (about 1e-7 apart). Scores, in [0, 1], to rtol=1e-5 and atol=1e-6; the features are
    sums of large cancelling terms (the randomised weights make them up to ~1e8), so to 1e-5 of their
    largest magnitude. A skipped or misplaced key changes both by far more.
    """
    torch.testing.assert_close(got.scores, expected.scores, rtol=1e-5, atol=1e-6)
    scale = float(expected.features.abs().max())
    torch.testing.assert_close(got.features, expected.features, rtol=1e-5, atol=1e-5 * scale)


@pytest.mark.parametrize(
    ("backbone", "stage"), [("resnet50", 2), ("resnet50", 1), ("resnet18", 1), ("resnet18", 2)]
)
def test_round_trip_in_the_published_layout_gives_the_same_outputs(tmp_path, backbone, stage):
    torch.manual_seed(stage)
    source = randomised(MEFARG(backbone, stage), seed=stage)
    path = saved(tmp_path, published_layout(source))
    loaded = load_au_net(path)
    assert (loaded.backbone_name, loaded.stage) == (backbone, stage)
    assert loaded.frozen and not loaded.training
    with torch.no_grad():
        expected, got = source(IMAGES), loaded(IMAGES)
        fresh = MEFARG(backbone, stage).eval()(IMAGES)
    assert_same_outputs(got, expected)
    assert not torch.allclose(fresh.scores, expected.scores)  # a net that skipped keys would show


@pytest.mark.parametrize("layout", ["no prefix", "bare"])
def test_other_layouts_load(tmp_path, layout):
    torch.manual_seed(3)
    source = randomised(MEFARG("resnet18", 1), seed=3)
    obj = published_layout(source, prefix="") if layout == "no prefix" else source.state_dict()
    loaded = load_au_net(saved(tmp_path, obj))
    with torch.no_grad():
        assert_same_outputs(loaded(IMAGES), source(IMAGES))


def keys_of(backbone: str, stage: int) -> dict:
    return {k: torch.empty(0) for k in MEFARG(backbone, stage).state_dict()}


def test_stage_and_backbone_are_read_off_the_keys():
    for backbone in ("resnet18", "resnet50"):
        for stage in (1, 2):
            assert detect_architecture(keys_of(backbone, stage)) == (backbone, stage)


def test_unsupported_backbones_are_named():
    swin = {"backbone.patch_embed.proj.weight": torch.empty(0), "head.main_sc": torch.empty(0)}
    with pytest.raises(CheckpointError, match=r"Swin Transformer .*resnet18, resnet50"):
        detect_architecture(swin)
    resnet101 = keys_of("resnet50", 2)
    resnet101.update({f"backbone.layer3.{i}.conv3.weight": torch.empty(0) for i in range(23)})
    with pytest.raises(CheckpointError, match=r"resnet101 is not supported; supported backbones: resnet18"):
        detect_architecture(resnet101)
    headless = {k: v for k, v in keys_of("resnet18", 1).items() if not k.startswith("head.gnn")}
    with pytest.raises(CheckpointError, match="unknown MEFARG head"):
        detect_architecture(headless)


def test_wrong_architecture_gives_one_line_error(tmp_path):
    deca = {"E_flame": {"layers.0.weight": torch.zeros(2)}, "E_detail": {}, "D_detail": {}}
    message = one_line_error(saved(tmp_path, deca, "deca_model.tar"))
    assert "not an OpenGraphAU MEFARG checkpoint" in message and "E_flame" in message


def test_bad_files_give_one_line_errors(tmp_path):
    page = tmp_path / "page.pth"
    page.write_text("<!DOCTYPE html><html><body>Google Drive - virus scan warning</body></html>")
    assert "HTML" in one_line_error(page)
    good = saved(tmp_path, published_layout(MEFARG("resnet18", 1))).read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good[: len(good) // 2])
    assert "truncated" in one_line_error(cut)


def test_missing_unexpected_and_misshaped_keys(tmp_path):
    torch.manual_seed(4)
    state = published_layout(MEFARG("resnet18", 1))["state_dict"]
    missing = dict(state)
    del missing["module.head.gnn.V.bias"]
    assert "1 missing: head.gnn.V.bias" in one_line_error(saved(tmp_path, {"state_dict": missing}, "a.pth"))
    extra = dict(state, **{"module.backbone.fc.weight": torch.zeros(1000, 512)})
    assert "unexpected: backbone.fc.weight" in one_line_error(saved(tmp_path, {"state_dict": extra}, "b.pth"))
    assert load_au_net(tmp_path / "b.pth", strict=False).frozen
    wrong = dict(state, **{"module.head.main_sc": torch.zeros(27, 64)})
    assert "wrong shape" in one_line_error(saved(tmp_path, {"state_dict": wrong}, "c.pth"), strict=False)


def test_a_weights_file_gives_its_detail_stages_au_net(random_weights, random_reconstructor):
    net = load_au_net(random_weights)
    reference = random_reconstructor.detail.au_net.state_dict()
    loaded = net.state_dict()
    assert loaded.keys() == reference.keys()
    for key, value in reference.items():
        torch.testing.assert_close(loaded[key], value.to(loaded[key].dtype), atol=2e-3, rtol=2e-3)  # float16


def test_a_weights_file_without_an_au_net_is_refused_in_one_line(tmp_path, tiny_config):
    import dataclasses

    from aucgan.build import coarse_stage, detail_stage
    from aucgan.weights import save_weights

    cfg = dataclasses.replace(
        tiny_config, model=dataclasses.replace(tiny_config.model, detail_decoder="none")
    )
    coarse = coarse_stage(cfg)
    detail = detail_stage(cfg, coarse.uv_space, None, coarse.face_model.n_expression)
    path = save_weights(tmp_path / "deca-like.safetensors", {"coarse": coarse, "detail": detail}, cfg)
    with pytest.raises(CheckpointError, match="without an AU net"):
        load_au_net(path)


def test_a_trained_checkpoint_gives_its_net_the_input_size_it_records(tmp_path):
    torch.manual_seed(4)
    source = randomised(MEFARG("resnet18", 1), seed=4)
    state = {"net." + k: v for k, v in source.state_dict().items()}
    recorded = {"state_dict": state, "aucgan": {"config": {"model": {"au_input_size": 96}}}}
    assert load_au_net(saved(tmp_path, recorded, "recorded.ckpt")).input_size == 96
    older = {"state_dict": state, "aucgan": {"steps_done": 3}}
    assert load_au_net(saved(tmp_path, older, "older.ckpt")).input_size == 0
    assert load_au_net(saved(tmp_path, published_layout(source))).input_size == 0


def test_a_weights_file_gives_its_au_net_the_configs_input_size(tmp_path, tiny_config):
    import dataclasses

    from aucgan.build import coarse_stage, detail_stage, new_au_net
    from aucgan.weights import save_weights

    cfg = dataclasses.replace(tiny_config, model=dataclasses.replace(tiny_config.model, au_input_size=96))
    coarse = coarse_stage(cfg)
    detail = detail_stage(cfg, coarse.uv_space, new_au_net(cfg), coarse.face_model.n_expression)
    path = save_weights(tmp_path / "sized.safetensors", {"coarse": coarse, "detail": detail}, cfg)
    assert load_au_net(path).input_size == 96


def test_save_au_net_round_trips_the_weights_and_the_input_size(tmp_path):
    torch.manual_seed(5)
    source = randomised(MEFARG("resnet18", 1, input_size=96), seed=5)
    loaded = load_au_net(save_au_net(source, tmp_path / "au.ckpt"))
    assert loaded.input_size == 96
    with torch.no_grad():
        assert_same_outputs(loaded(IMAGES), source(IMAGES))
