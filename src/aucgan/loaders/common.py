"""Safe, strict reading of published checkpoints (DECA, EMOCA, OpenGraphAU).

Two rules, against the silent failures of the reference code:

* **never execute a pickle**: files are read with ``torch.load(weights_only=True, map_location="cpu")``,
  which only rebuilds tensors and plain containers; anything else is refused with one line naming the file;
* **never skip a key silently**: :func:`load_strict` compares a state dict with a module and lists missing,
  unexpected and mis-shaped keys by name; it refuses unless the caller passes ``strict=False``, and even
  then refuses mis-shaped tensors.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; ``str()`` is one line naming the file and the problem."""


def is_html(head: bytes) -> bool:
    """Whether a file's first bytes are an HTML page (a download that saved the web page instead)."""
    return head.lstrip().lower().startswith((b"<!doctype html", b"<html"))


def describe_bytes(head: bytes, what: str = "checkpoint") -> str:
    """What the first bytes of a file that failed to load as a ``what`` say it is."""
    if is_html(head):
        return f"an HTML page, not a {what} (a download that saved a web page?)"
    if not head:
        return "an empty file"
    return "not a PyTorch checkpoint"


def read_checkpoint(path: str | os.PathLike[str]) -> Mapping:
    """Read a ``torch.save`` file without executing code.

    Raises:
        CheckpointError: missing, empty, truncated, HTML, non-checkpoint, or a pickle that needs code.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint (incomplete zip); download it again")
    if not zipfile.is_zipfile(path) and not head.startswith(b"\x80"):
        raise CheckpointError(f"{path}: {describe_bytes(head)}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        lines = [line for line in str(error).splitlines() if "GLOBAL" in line or "Unsupported" in line]
        what = lines[0].strip() if lines else "objects other than tensors"
        raise CheckpointError(f"{path}: refused to unpickle code or objects ({what}); not loaded") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: unreadable or truncated checkpoint ({first})") from None
    if not isinstance(data, Mapping):
        raise CheckpointError(f"{path}: expected a dict of state dicts, found {type(data).__name__}")
    return data


@dataclass(frozen=True)
class KeyReport:
    """How a state dict matches a module."""

    missing: tuple[str, ...] = ()
    unexpected: tuple[str, ...] = ()
    mismatched: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = field(default=())

    @property
    def clean(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 6) -> str:
        """One line listing the problems, each list cut after ``limit`` names."""

        def names(items: tuple[str, ...]) -> str:
            shown = ", ".join(items[:limit])
            return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")

        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing: {names(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected: {names(self.unexpected)}")
        if self.mismatched:
            shapes = tuple(f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in self.mismatched)
            parts.append(f"{len(self.mismatched)} with wrong shape (file vs model): {names(shapes)}")
        return "; ".join(parts) or "all keys match"


def compare_keys(module: nn.Module, state: Mapping[str, torch.Tensor]) -> KeyReport:
    """Compare a state dict with ``module.state_dict()``."""
    own = module.state_dict()
    missing = tuple(k for k in own if k not in state)
    unexpected = tuple(k for k in state if k not in own)
    mismatched = tuple(
        (k, tuple(state[k].shape), tuple(own[k].shape))
        for k in own
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != own[k].shape
    )
    return KeyReport(missing, unexpected, mismatched)


def load_strict(
    module: nn.Module, state: Mapping[str, torch.Tensor], source: str, strict: bool = True
) -> KeyReport:
    """Load ``state`` into ``module``, refusing on any mismatch unless ``strict=False``.

    With ``strict=False`` missing and unexpected keys are tolerated (and returned, for the caller to
    report), but tensors of the wrong shape are always refused.

    Args:
        source: what to name in errors, e.g. ``"deca_model.tar [E_flame]"``.

    Raises:
        CheckpointError: one line naming ``source`` and the offending keys.
    """
    report = compare_keys(module, state)
    if report.mismatched or (strict and not report.clean):
        hint = "" if report.mismatched else "; pass strict=False to load the matching keys anyway"
        raise CheckpointError(f"{source}: does not fit {type(module).__name__}: {report.summary()}{hint}")
    module.load_state_dict({k: v for k, v in state.items() if k not in report.unexpected}, strict=False)
    return report


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries of ``state`` under ``prefix`` (e.g. ``"module."``), with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
