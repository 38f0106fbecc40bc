"""Tests of aucgan.face_model.flame_texture: FLAME albedo files in both published layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aucgan.face_model.flame_texture import load_flame_albedo, read_flame_albedo, resample_maps
from aucgan.loaders.common import CheckpointError

SIDE, N_COMPONENTS = 8, 6


def bfm_arrays(seed: int = 0) -> dict:
    """``FLAME_albedo_from_BFM.npz``'s layout: flat mean in [0, 1], (S·S·3, K) components."""
    rng = np.random.default_rng(seed)
    n_values = SIDE * SIDE * 3
    return {
        "MU": rng.uniform(0.2, 0.8, size=(1, n_values)),
        "PC": rng.normal(size=(n_values, N_COMPONENTS)) * 0.05,
    }


def flame_arrays(seed: int = 1) -> dict:
    """The FLAME texture space's layout: shaped mean and components in [0, 255], plus other keys."""
    rng = np.random.default_rng(seed)
    return {
        "mean": rng.uniform(40, 220, size=(SIDE, SIDE, 3)).astype(np.float32),
        "tex_dir": (rng.normal(size=(SIDE, SIDE, 3, N_COMPONENTS)) * 10).astype(np.float32),
        "vt": rng.random((10, 2)),
    }


def reference_texture(arrays: dict, code: np.ndarray, size: int) -> np.ndarray:
    """DECA's recipe, spelt out for one code: mean + components @ code, (S, S, 3) BGR → RGB, scale,
    then an area average over integer blocks; clamped to [0, 1]."""
    bfm = "MU" in arrays
    mean = np.asarray(arrays["MU" if bfm else "mean"], np.float64).reshape(-1)
    components = np.asarray(arrays["PC" if bfm else "tex_dir"], np.float64).reshape(mean.size, -1)
    flat = mean + components[:, : len(code)] @ code
    texture = flat.reshape(SIDE, SIDE, 3)[:, :, [2, 1, 0]] * (1.0 if bfm else 1 / 255)
    factor = SIDE // size
    blocks = texture.reshape(size, factor, size, factor, 3).mean(axis=(1, 3))
    return np.clip(blocks.transpose(2, 0, 1), 0, 1)


def save(tmp_path, arrays: dict, name: str = "albedo.npz"):
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def one_line_error(path, **kwargs) -> str:
    with pytest.raises(CheckpointError) as info:
        load_flame_albedo(path, **kwargs)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize("make", [bfm_arrays, flame_arrays])
@pytest.mark.parametrize("size", [SIDE, SIDE // 2])
def test_matches_the_reference_recipe(tmp_path, make, size):
    arrays = make()
    albedo = load_flame_albedo(save(tmp_path, arrays), n_albedo=4, size=size)
    codes = torch.randn(3, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2
    maps = albedo(codes)
    assert maps.shape == (3, 3, size, size) and albedo.n_albedo == 4 and albedo.size == size
    for b in range(3):
        expected = reference_texture(arrays, codes[b].numpy(), size)
        np.testing.assert_allclose(maps[b].numpy(), expected, atol=2e-6)


def test_colours_are_turned_to_rgb(tmp_path):
    arrays = flame_arrays()
    arrays["mean"][:] = 0
    arrays["mean"][..., 0] = 255  # blue, stored first (B, G, R)
    mean, basis = read_flame_albedo(save(tmp_path, arrays), n_albedo=2)
    assert mean.shape == (3, SIDE, SIDE) and basis.shape == (2, 3, SIDE, SIDE)
    np.testing.assert_allclose(mean[2], 1.0)
    np.testing.assert_allclose(mean[:2], 0.0)
    np.testing.assert_allclose(basis[1, 0], arrays["tex_dir"][..., 2, 1] / 255, rtol=1e-6)


def test_rows_keep_their_order_top_row_first(tmp_path):
    arrays = bfm_arrays()
    mean = np.zeros((SIDE, SIDE, 3))
    mean[0] = 1.0
    arrays["MU"] = mean.reshape(1, -1)
    maps = load_flame_albedo(save(tmp_path, arrays), n_albedo=1, size=SIDE).mean
    assert torch.all(maps[:, 0] == 1) and torch.all(maps[:, 1:] == 0)


def test_enlarging_is_bilinear_and_commutes_with_the_codes(tmp_path):
    arrays = bfm_arrays()
    path = save(tmp_path, arrays)
    native, larger = load_flame_albedo(path, 3, SIDE), load_flame_albedo(path, 3, 2 * SIDE)
    code = torch.tensor([[0.5, -1.0, 0.3]])
    unclamped = native.mean + torch.einsum("bk,kchw->bchw", code, native.basis)
    expected = torch.nn.functional.interpolate(unclamped, size=(2 * SIDE,) * 2, mode="bilinear")
    torch.testing.assert_close(larger(code), expected.clamp(0, 1), atol=1e-6, rtol=0)


def test_resample_maps_area_is_a_block_mean():
    maps = torch.arange(2 * 1 * 4 * 4, dtype=torch.float64).reshape(2, 1, 4, 4)
    expected = maps.reshape(2, 1, 2, 2, 2, 2).mean(dim=(3, 5))
    torch.testing.assert_close(resample_maps(maps, 2), expected)
    assert resample_maps(maps, 4) is maps
    with pytest.raises(ValueError, match=r"\(2, 4, 4\)"):
        resample_maps(maps[:, 0], 2)


def test_the_texture_model_stays_out_of_the_state_dict(tmp_path):
    albedo = load_flame_albedo(save(tmp_path, bfm_arrays()), 2, SIDE)
    assert albedo.state_dict() == {}
    assert albedo.to(torch.float64).mean.dtype == torch.float64


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda a: a.pop("PC"), "missing key 'PC'"),
        (lambda a: a.update(PC=a["PC"][:-1]), "key 'PC' has shape (191, 6)"),
        (lambda a: a.update(MU=a["MU"][:, :-3]), "key 'MU' has shape (1, 189)"),
        (lambda a: a.update(MU=a["MU"] * 255), "expected albedo in [0, 1]"),
        (lambda a: a.update(PC=np.full_like(a["PC"], np.nan)), "key 'PC' holds non-finite values"),
        (lambda a: a.update(PC=a["PC"].astype(str)), "key 'PC' holds <U"),
        (lambda a: (a.clear(), a.update(x=np.zeros(3))), "found x"),
    ],
)
def test_bad_files_name_the_file_and_key(tmp_path, change, expected):
    arrays = bfm_arrays()
    change(arrays)
    assert expected in one_line_error(save(tmp_path, arrays), n_albedo=2)


def test_more_components_than_the_file_holds(tmp_path):
    message = one_line_error(save(tmp_path, bfm_arrays()), n_albedo=N_COMPONENTS + 1)
    assert "holds 6 components" in message and "n_albedo asks for 7" in message


def test_unreadable_files_and_pickles(tmp_path):
    html = tmp_path / "albedo.npz"
    html.write_text("<!DOCTYPE html><html>log in</html>", encoding="utf-8")
    assert "not a readable .npz file: an HTML page" in one_line_error(html)
    assert "no such file" in one_line_error(tmp_path / "missing.npz")
    pickled = tmp_path / "pickled.npz"
    np.savez(pickled, MU=np.array([{"a": 1}], dtype=object), PC=np.zeros((3, 1)))
    assert "pickled objects" in one_line_error(pickled)
    single = tmp_path / "single.npy"
    np.save(single, np.zeros(12))
    assert "single .npy array" in one_line_error(single)
