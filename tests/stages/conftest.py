"""Fixtures shared by the stage tests: each test module sets ``cfg`` and ``N_SAMPLES``."""

from __future__ import annotations

import pytest

from aucgan import build
from aucgan.data.synthetic import SyntheticSample, SyntheticWorld, collate
from aucgan.stages.coarse import CoarseStage


@pytest.fixture(scope="module")
def coarse_stage(cfg) -> CoarseStage:
    """A decode-only coarse stage of the module's config."""
    return build.coarse_stage(cfg, with_encoder=False)


@pytest.fixture(scope="module")
def world(cfg) -> SyntheticWorld:
    return build.world_parameters(cfg).world()


@pytest.fixture(scope="module")
def batch(world, request) -> SyntheticSample:
    """The first ``N_SAMPLES`` (a constant of the test module) samples of the world, collated."""
    return collate([world.sample(i) for i in range(request.module.N_SAMPLES)])
