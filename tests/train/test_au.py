"""Tests of AU-net training (:mod:`aucgan.train.au`).

Per-AU F1 against a plain loop (undefined AUs are NaN), the weighted binary cross-entropy against its
formula on probabilities (never through a sigmoid), and the AU occurrence rates of the synthetic world
that weigh the positives.
"""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch

from aucgan.au import MAIN_AUS
from aucgan.build import world_parameters
from aucgan.config import Config, load_config, preset_path
from aucgan.data.synthetic import drawn_expressions
from aucgan.loaders.common import CheckpointError
from aucgan.nets.au_net import MEFARG
from aucgan.train import au as au_training
from aucgan.train.au import AUTraining, au_frequencies, f1_scores, f1_thresholds, weighted_bce
from aucgan.train.data import BalancedStepSampler, au_balance_weights

TINY = preset_path("synthetic-tiny")


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(Config, TINY)


def reference_f1(predicted: list[list[bool]], labels: list[list[bool]]) -> list[float]:
    scores = []
    for k in range(len(predicted[0])):
        tp = fp = fn = 0
        for row_predicted, row_labels in zip(predicted, labels, strict=True):
            p, y = row_predicted[k], row_labels[k]
            tp += p and y
            fp += p and not y
            fn += y and not p
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan)
    return scores


def test_f1_scores_match_a_plain_loop():
    generator = torch.Generator().manual_seed(0)
    predicted = torch.rand(40, 27, generator=generator) < 0.3
    labels = torch.rand(40, 27, generator=generator) < 0.3
    predicted[:, 0], labels[:, 0] = False, False
    predicted[:, 1], labels[:, 1] = False, True
    predicted[:, 2], labels[:, 2] = True, False
    predicted[:, 3] = labels[:, 3] = torch.arange(40) % 3 == 0
    predicted[:, 4], labels[:, 4] = ~labels[:, 4], labels[:, 4]
    expected = torch.tensor(reference_f1(predicted.tolist(), labels.tolist()))
    actual = f1_scores(predicted, labels)
    assert actual.shape == (27,)
    torch.testing.assert_close(actual, expected, equal_nan=True)
    assert math.isnan(actual[0]) and actual[1] == 0 and actual[2] == 0 and actual[3] == 1 and actual[4] == 0
    assert not actual[1:].isnan().any()


def test_f1_scores_take_integer_labels():
    predicted = torch.tensor([[1, 0], [1, 1], [0, 0]])
    labels = torch.tensor([[1, 0], [0, 0], [1, 0]])
    expected = torch.tensor(reference_f1(predicted.bool().tolist(), labels.bool().tolist()))
    torch.testing.assert_close(f1_scores(predicted, labels), expected, equal_nan=True)


def test_f1_thresholds_pick_the_best_candidate_of_a_plain_search():
    generator = torch.Generator().manual_seed(1)
    labels = torch.rand(60, 27, generator=generator) < 0.2
    scores = (0.35 * labels + 0.6 * torch.rand(60, 27, generator=generator)).clamp(0, 1)
    labels[:, 5] = False  # no positive: the default 0.5
    candidates = [0.05 * i for i in range(1, 20)]
    thresholds = f1_thresholds(scores, labels)
    for k in range(27):
        if k == 5:
            assert thresholds[k] == 0.5
            continue
        f1_of = {
            t: reference_f1((scores[:, k : k + 1] > t).tolist(), labels[:, k : k + 1].tolist())[0]
            for t in candidates
        }
        best = max(f1_of.values())
        chosen = min(candidates, key=lambda t: abs(t - float(thresholds[k])))
        assert f1_of[chosen] == pytest.approx(best), k
        # the first best candidate, as argmax returns
        assert chosen == pytest.approx(next(t for t in candidates if f1_of[t] == pytest.approx(best))), k


def reference_bce(probabilities: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor) -> float:
    total, count = 0.0, 0
    for row_p, row_y in zip(probabilities.tolist(), labels.tolist(), strict=True):
        for k, (p, y) in enumerate(zip(row_p, row_y, strict=True)):
            term = -(y * math.log(p) + (1 - y) * math.log(1 - p))
            total += (float(weight[k]) if y > 0 else 1.0) * term
            count += 1
    return total / count


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weighted_bce_matches_its_formula(dtype):
    generator = torch.Generator().manual_seed(1)
    probabilities = (0.02 + 0.96 * torch.rand(6, 27, generator=generator)).to(dtype)
    labels = (torch.rand(6, 27, generator=generator) < 0.4).to(dtype)
    weight = (1 + 9 * torch.rand(27, generator=generator)).to(dtype)
    loss = weighted_bce(probabilities, labels, weight)
    assert loss.shape == () and loss.dtype == dtype
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    assert float(loss) == pytest.approx(reference_bce(probabilities, labels, weight), rel=tolerance)


def test_weighted_bce_reads_probabilities_not_logits():
    weight = torch.full((27,), 3.0)
    half = weighted_bce(torch.full((2, 27), 0.5), torch.zeros(2, 27), weight)
    assert float(half) == pytest.approx(math.log(2), rel=1e-6)
    labels = (torch.arange(27) % 2).float().expand(2, 27)
    certain_right = weighted_bce(labels.clone(), labels, weight)
    assert 0 <= float(certain_right) < 1e-5
    certain_wrong = weighted_bce(1 - labels, labels, weight)
    assert torch.isfinite(certain_wrong)
    floor = -math.log(1e-6)
    assert float(certain_wrong) == pytest.approx(floor * (13 * 3 + 14 * 1) / 27, rel=1e-3)


def test_weighted_bce_gradient_is_finite_at_zero_and_one():
    probabilities = torch.tensor([[0.0, 1.0, 0.3]], requires_grad=True)
    loss = weighted_bce(probabilities, torch.tensor([[1.0, 0.0, 1.0]]), torch.ones(3))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(probabilities.grad).all()
    assert probabilities.grad[0, 2] == pytest.approx(-1 / (3 * 0.3), rel=1e-5)


def test_au_frequencies(cfg):
    draws = 1500
    frequencies = au_frequencies(cfg, draws)
    assert frequencies.shape == (len(MAIN_AUS),) == (27,)
    assert ((frequencies >= 0) & (frequencies <= 1)).all()
    assert torch.equal(frequencies, au_frequencies(cfg, draws))
    assert torch.allclose(frequencies * draws, (frequencies * draws).round(), atol=1e-3)
    au12, au32 = frequencies[MAIN_AUS.index("AU12")], frequencies[MAIN_AUS.index("AU32")]
    assert au12 > 0.05 and au12 > 2 * au32

    world = world_parameters(cfg).world()
    generator = torch.Generator().manual_seed(12345)
    independent = torch.stack([world.expression(generator) > 0 for _ in range(draws)]).float().mean(0)
    assert (frequencies - independent).abs().max() < 0.05


def test_au_training_positive_weights(cfg, monkeypatch):
    frequencies = torch.linspace(0.0, 1.0, 27)
    monkeypatch.setattr(au_training, "au_frequencies", lambda _: frequencies.clone())
    module = AUTraining(cfg)
    expected = [
        min(cfg.loss.au_positive_weight, max(1.0, (1 - f) / max(f, 1e-3))) for f in frequencies.tolist()
    ]
    assert module.positive_weight.tolist() == pytest.approx(expected, rel=1e-6)
    assert (
        module.positive_weight[0] == cfg.loss.au_positive_weight == 10.0 and module.positive_weight[-1] == 1.0
    )
    assert "positive_weight" not in module.state_dict()
    plain = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, au_positive_weight=1.0))
    assert torch.equal(AUTraining(plain).positive_weight, torch.ones(27))
    assert all(name.startswith("net.") for name in module.state_dict())

    generator = torch.Generator().manual_seed(2)
    batch = SimpleNamespace(
        image=torch.rand(4, 3, cfg.render.image_size, cfg.render.image_size, generator=generator),
        au_occurrence=torch.rand(4, 27, generator=generator) < 0.3,
    )
    module.train()
    loss = module.loss(batch)
    assert loss.shape == () and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None for p in module.net.parameters() if p.requires_grad)


def test_au_frequencies_follow_the_balanced_sampler(cfg):
    balanced_cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, au_balance=1.0))
    plain, balanced = au_frequencies(cfg), au_frequencies(balanced_cfg)
    labels = drawn_expressions(cfg.seed + 1, range(4000)) > 0
    sampler = BalancedStepSampler(au_balance_weights(labels, 1.0), batch_size=16, seed=3, steps=1500)
    drawn = torch.tensor([item for batch in sampler for item in batch])
    empirical = labels[drawn].float().mean(0)
    # Two independent samples of ~4000 draws each: 0.035 is ~4 standard errors of their difference.
    assert (balanced - empirical).abs().max() < 0.035
    assert (plain - labels.float().mean(0)).abs().max() < 0.035
    assert balanced.min() > 1.3 * plain.min()
    assert balanced.max() / balanced.min() < 0.6 * plain.max() / plain.min()


def test_au_training_starts_from_trainer_start_from(cfg, tmp_path):
    source = MEFARG(cfg.model.au_backbone, cfg.model.au_stage)
    torch.nn.init.normal_(source.backbone.conv1.weight)
    torch.save(source.state_dict(), tmp_path / "au.pth")
    start_cfg = dataclasses.replace(
        cfg, trainer=dataclasses.replace(cfg.trainer, start_from=str(tmp_path / "au.pth"))
    )
    module = AUTraining(start_cfg)
    for name, value in source.state_dict().items():
        assert torch.equal(module.net.state_dict()[name], value), name
    assert all(p.requires_grad for p in module.net.parameters())
    assert not torch.equal(AUTraining(cfg).net.backbone.conv1.weight, source.backbone.conv1.weight)

    other = MEFARG(cfg.model.au_backbone, 3 - cfg.model.au_stage)
    torch.save(other.state_dict(), tmp_path / "other.pth")
    wrong = dataclasses.replace(
        cfg, trainer=dataclasses.replace(cfg.trainer, start_from=str(tmp_path / "other.pth"))
    )
    with pytest.raises(CheckpointError, match=r"other\.pth \[trainer\.start_from\].*set model\.au_backbone="):
        AUTraining(wrong)


@pytest.mark.parametrize("mirror", [0.0, 1.0])
def test_au_training_mirrors_its_inputs_with_augment_mirror(cfg, mirror):
    plain = dataclasses.replace(
        cfg.augment,
        rotation_degrees=0.0,
        translate=0.0,
        scale=(1.0, 1.0),
        brightness=0.0,
        contrast=0.0,
        saturation=0.0,
        hue=0.0,
        mirror=mirror,
    )
    module = AUTraining(dataclasses.replace(cfg, augment=plain)).eval()
    generator = torch.Generator().manual_seed(0)
    size = cfg.render.image_size
    image = torch.rand(2, 3, size, size, generator=generator)
    labels = torch.rand(2, 27, generator=generator) < 0.3
    batch = SimpleNamespace(image=image, au_occurrence=labels)
    with torch.no_grad():
        seen = image.flip(-1) if mirror else image
        expected = weighted_bce(module.net(seen).main_scores, labels.float(), module.positive_weight)
        torch.testing.assert_close(module.loss(batch), expected)


def test_au_training_runs_the_net_channels_last_with_the_scores_of_the_plain_layout(cfg):
    module = AUTraining(cfg).eval()
    assert module.net.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    plain = MEFARG(cfg.model.au_backbone, cfg.model.au_stage).eval()
    plain.load_state_dict(module.net.state_dict())
    assert plain.backbone.conv1.weight.is_contiguous()
    size = cfg.render.image_size
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fast = module.net(images.contiguous(memory_format=torch.channels_last)).scores
        torch.testing.assert_close(fast, plain(images).scores, atol=1e-5, rtol=1e-4)
