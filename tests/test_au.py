"""Tests of aucgan.au: the OpenGraphAU order and the dataset subsets."""

from __future__ import annotations

import pytest

from aucgan.au import AU_NAMES, BP4D_INDICES, DISFA_INDICES, MAIN_AUS, SUB_AUS, au_index

# OpenGraphAU's 27 main AUs, by FACS number, in the published order.
OPENGRAPHAU_MAIN_NUMBERS = (
    1, 2, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22, 23, 24, 25, 26, 27, 32, 38, 39,
)  # fmt: skip
SUB_AU_NUMBERS = (1, 2, 4, 6, 10, 12, 14)
BP4D_AUS = ("AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU14", "AU15", "AU17", "AU23", "AU24")
DISFA_AUS = ("AU1", "AU2", "AU4", "AU6", "AU9", "AU12", "AU25", "AU26")


def test_main_aus_follow_opengraphau_order():
    assert len(MAIN_AUS) == 27
    expected = tuple(f"AU{number}" for number in OPENGRAPHAU_MAIN_NUMBERS)
    assert expected == MAIN_AUS
    assert len(set(MAIN_AUS)) == len(MAIN_AUS)


def test_sub_aus_are_left_right_pairs_of_seven_main_aus():
    assert len(SUB_AUS) == 14
    assert len(set(SUB_AUS)) == 14
    for k, number in enumerate(SUB_AU_NUMBERS):
        left, right = SUB_AUS[2 * k], SUB_AUS[2 * k + 1]
        assert left.startswith("L") and left.endswith(f"AU{number}")
        assert right.startswith("R") and right.endswith(f"AU{number}")
        assert f"AU{number}" in MAIN_AUS


def test_every_main_au_has_a_name():
    assert set(AU_NAMES) == set(MAIN_AUS)
    assert all(isinstance(name, str) and name for name in AU_NAMES.values())


@pytest.mark.parametrize(("indices", "names"), [(BP4D_INDICES, BP4D_AUS), (DISFA_INDICES, DISFA_AUS)])
def test_dataset_indices_select_the_dataset_aus(indices, names):
    assert tuple(MAIN_AUS[i] for i in indices) == names
    assert tuple(au_index(name) for name in names) == tuple(indices)


@pytest.mark.parametrize("number", OPENGRAPHAU_MAIN_NUMBERS)
def test_au_index_accepts_name_and_number(number):
    expected = MAIN_AUS.index(f"AU{number}")
    assert au_index(f"AU{number}") == expected
    assert au_index(str(number)) == expected
    assert au_index(f"au{number}") == expected


@pytest.mark.parametrize("name", ["AU3", "3", "AU99", "", "AU", "L_AU12", "twelve"])
def test_au_index_rejects_unknown_with_the_valid_names(name):
    with pytest.raises(ValueError, match="AU12") as error:
        au_index(name)
    assert repr(name) in str(error.value)
