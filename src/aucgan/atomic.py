"""Atomic file writes: every file aucgan writes (outputs, checkpoints, weights, datasets, reports, configs)
goes through here.

A write goes to a hidden temporary file beside the destination (``.NAME.<random>.tmp<suffix>``), is flushed
to disk, and is renamed over the destination with :func:`os.replace`; the folder entry is then flushed too.
A reader therefore sees the old file or the new one, never a torn one, and a crash or kill at any point
leaves at most a hidden temporary file (which no reader looks at). On an error the temporary file is
removed and the error propagates.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a folder be opened or synced
        handle = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(handle)
        finally:
            os.close(handle)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers that append one, like NumPy's, keep
    the name) for a writer that takes a file name; when the block ends normally the file is synced and
    moved onto ``path``; otherwise it is deleted."""
    path = Path(os.fspath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        yield temporary
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    _sync_folder(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], binary: bool = True) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path`` for writing (bytes, or UTF-8 text with ``\\n`` line ends);
    on success it replaces ``path``, else it is deleted."""
    with atomic_path(path) as temporary:
        if binary:
            handle: IO[Any] = open(temporary, "xb")  # noqa: SIM115
        else:
            handle = open(temporary, "x", encoding="utf-8", newline="\n")  # noqa: SIM115
        with handle:
            yield handle


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` through :func:`atomic_open`: a crash or kill at any point leaves either the old file or
    the new one, never a torn one (training checkpoints are written with it)."""
    import torch

    with atomic_open(path) as stream:
        torch.save(obj, stream)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_open(path) as handle:
        handle.write(data)
    return Path(os.fspath(path))


__all__ = ["atomic_open", "atomic_path", "atomic_torch_save", "atomic_write_bytes"]


def atomic_save_npz(path: str | os.PathLike[str], arrays: Any) -> Path:
    """``numpy.savez`` of the mapping ``arrays`` (name → array) to ``path`` through :func:`atomic_open`;
    returns ``path``."""
    import numpy as np

    with atomic_open(path) as handle:
        np.savez(handle, **arrays)
    return Path(os.fspath(path))
