"""Facial Action Units: the OpenGraphAU order used throughout the project and dataset subsets.

All AU vectors in aucgan follow OpenGraphAU's order: 27 main AUs, then 14 left/right sub-AUs.
"""

from __future__ import annotations

MAIN_AUS: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU5", "AU6", "AU7", "AU9", "AU10", "AU11", "AU12", "AU13", "AU14", "AU15",
    "AU16", "AU17", "AU18", "AU19", "AU20", "AU22", "AU23", "AU24", "AU25", "AU26", "AU27", "AU32",
    "AU38", "AU39",
)  # fmt: skip

SUB_AUS: tuple[str, ...] = tuple(
    f"{side}{au}" for au in ("AU1", "AU2", "AU4", "AU6", "AU10", "AU12", "AU14") for side in ("L_", "R_")
)

AU_NAMES: dict[str, str] = {
    "AU1": "inner brow raiser",
    "AU2": "outer brow raiser",
    "AU4": "brow lowerer",
    "AU5": "upper lid raiser",
    "AU6": "cheek raiser",
    "AU7": "lid tightener",
    "AU9": "nose wrinkler",
    "AU10": "upper lip raiser",
    "AU11": "nasolabial deepener",
    "AU12": "lip corner puller",
    "AU13": "sharp lip puller",
    "AU14": "dimpler",
    "AU15": "lip corner depressor",
    "AU16": "lower lip depressor",
    "AU17": "chin raiser",
    "AU18": "lip pucker",
    "AU19": "tongue show",
    "AU20": "lip stretcher",
    "AU22": "lip funneler",
    "AU23": "lip tightener",
    "AU24": "lip pressor",
    "AU25": "lips part",
    "AU26": "jaw drop",
    "AU27": "mouth stretch",
    "AU32": "lip bite",
    "AU38": "nostril dilator",
    "AU39": "nostril compressor",
}

BP4D_INDICES: tuple[int, ...] = (0, 1, 2, 4, 5, 7, 9, 11, 12, 14, 19, 20)
DISFA_INDICES: tuple[int, ...] = (0, 1, 2, 4, 6, 9, 21, 22)


def au_index(name: str) -> int:
    """Index of a main AU (``"AU12"`` or ``"12"``) in :data:`MAIN_AUS`; the error names the valid ones."""
    key = name.upper() if name.upper().startswith("AU") else f"AU{name}"
    if key not in MAIN_AUS:
        raise ValueError(f"unknown action unit {name!r}; valid: {', '.join(MAIN_AUS)}")
    return MAIN_AUS.index(key)
