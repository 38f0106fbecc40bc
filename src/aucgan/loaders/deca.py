"""Strict loaders of the published DECA and EMOCA weights into this project's modules.

* DECA's ``deca_model.tar`` is a ``torch.save`` dict with the state dicts ``E_flame`` (coarse encoder),
  ``E_detail`` (detail encoder) and ``D_detail`` (detail decoder); other top-level entries (optimiser
  state, epoch counters) are ignored and named in a log message.
* EMOCA's files are Lightning checkpoints ``{'state_dict': {...}}`` whose keys carry the prefixes
  ``deca.E_flame.``, ``deca.E_expression.``, ``deca.E_detail.``, ``deca.D_detail.``; a plain dict with
  ``E_flame`` and ``E_expression`` state dicts (DECA's layout) is accepted too.

Files are read with :func:`~aucgan.loaders.common.read_checkpoint` (never executes a pickle) and each
state dict is loaded with :func:`~aucgan.loaders.common.load_strict`: a missing, unexpected or mis-shaped
key raises a one-line :class:`~aucgan.loaders.common.CheckpointError` naming the file, the part
(``"deca_model.tar [E_flame]"``) and the keys. With ``strict=False`` missing and unexpected keys are
tolerated, returned in ``reports`` and logged as warnings; wrong shapes are always refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import torch
from torch import nn

from aucgan.loaders.common import CheckpointError, KeyReport, load_strict, read_checkpoint, strip_prefix
from aucgan.nets.coarse_encoder import CoarseEncoder, CodeLayout, ExpressionEncoder
from aucgan.nets.detail_encoder import ResNetDetailEncoder

_log = logging.getLogger(__name__)

DECA_PARTS: tuple[str, ...] = ("E_flame", "E_detail", "D_detail")
EMOCA_PARTS: tuple[str, ...] = ("E_flame", "E_expression", "E_detail", "D_detail")
EMOCA_PREFIX = "deca."
N_DETAIL = 128
"""DECA's detail code size; the detail decoder's latent is [jaw pose 3, expression, detail code]."""
N_JAW = 3
_LISTED = 8


@dataclass(frozen=True)
class DecaWeights:
    """DECA's networks with the published weights loaded, in eval mode.

    Attributes:
        coarse_encoder: ``E_flame``, images ``(B, 3, 224, 224)`` in [0, 1] →
            :class:`~aucgan.nets.coarse_encoder.CoarseCodes`.
        detail_encoder: ``E_detail``, images → ``detail_code (B, 128)``.
        detail_decoder: ``D_detail`` (``DecaDetailDecoder``), or ``None`` when the file has none.
        reports: per part (``"E_flame"`` …), how the file's keys matched; all clean when ``strict=True``.
    """

    coarse_encoder: CoarseEncoder
    detail_encoder: ResNetDetailEncoder
    detail_decoder: nn.Module | None
    reports: Mapping[str, KeyReport]


@dataclass(frozen=True)
class EmocaWeights:
    """EMOCA's networks with the published weights loaded, in eval mode.

    Attributes:
        coarse_encoder: ``E_flame``, as in DECA (its expression is replaced by the expression encoder's).
        expression_encoder: ``E_expression``, images → ``(B, n_exp)``.
        detail_encoder: ``E_detail`` or ``None`` when the file has none (coarse-only models).
        detail_decoder: ``D_detail`` or ``None`` when the file has none.
        reports: per part, how the file's keys matched.
    """

    coarse_encoder: CoarseEncoder
    expression_encoder: ExpressionEncoder
    detail_encoder: ResNetDetailEncoder | None
    detail_decoder: nn.Module | None
    reports: Mapping[str, KeyReport]


def load_deca(
    path: str | os.PathLike[str],
    *,
    n_shape: int = 100,
    n_tex: int = 50,
    n_exp: int = 50,
    strict: bool = True,
) -> DecaWeights:
    """Load DECA's ``deca_model.tar``.

    Args:
        path: the file.
        n_shape, n_tex, n_exp: code sizes the file was trained with (DECA: 100, 50, 50).
        strict: refuse any missing or unexpected key (wrong shapes are refused either way).

    Raises:
        CheckpointError: one line naming the file and the problem (unreadable, not a DECA checkpoint,
            keys or shapes that do not fit).
    """
    data = read_checkpoint(path)
    required = ("E_flame", "E_detail")
    if any(name not in data for name in required):
        raise CheckpointError(
            f"{path}: not a DECA checkpoint: expected state dicts {', '.join(DECA_PARTS)}; "
            f"top-level keys found: {_listing(data)}"
        )
    _log_ignored(path, "top-level entries", [key for key in data if key not in DECA_PARTS])
    parts = {name: _state_dict(data[name], _source(path, name)) for name in DECA_PARTS if name in data}
    layout = CodeLayout.flame(n_shape, n_tex, n_exp)
    coarse, detail = CoarseEncoder(layout), ResNetDetailEncoder(N_DETAIL)
    reports = {
        "E_flame": _load(coarse.network, parts["E_flame"], path, "E_flame", strict, _flame_sizes(layout)),
        "E_detail": _load(detail, parts["E_detail"], path, "E_detail", strict, f"detail code {N_DETAIL}"),
    }
    decoder = None
    if "D_detail" in parts:
        decoder = _detail_decoder(N_JAW + n_exp + N_DETAIL)
        reports["D_detail"] = _load(decoder, parts["D_detail"], path, "D_detail", strict)
        decoder.eval()
    else:
        _log.info("%s: no D_detail in the file; detail_decoder is None", path)
    return DecaWeights(coarse.eval(), detail.eval(), decoder, MappingProxyType(reports))


def load_emoca(
    path: str | os.PathLike[str],
    *,
    n_shape: int = 100,
    n_tex: int = 50,
    n_exp: int = 50,
    strict: bool = True,
) -> EmocaWeights:
    """Load an EMOCA checkpoint (Lightning ``{'state_dict': {'deca.E_flame.…': …}}`` or a plain dict).

    The layout is detected from the keys. The detail networks are loaded when the file has them.

    Args:
        path: the file (EMOCA's ``deca-epoch=…ckpt``).
        n_shape, n_tex, n_exp: code sizes of ``E_flame`` (EMOCA: 100, 50, 50); ``E_expression``
            regresses ``n_exp`` values.
        strict: refuse any missing or unexpected key (wrong shapes are refused either way).

    Raises:
        CheckpointError: one line naming the file and the problem; for an unknown layout, the
            top-level keys found.
    """
    data = read_checkpoint(path)
    parts = _emoca_parts(data, path)
    layout = CodeLayout.flame(n_shape, n_tex, n_exp)
    coarse, expression = CoarseEncoder(layout), ExpressionEncoder(n_exp)
    reports = {
        "E_flame": _load(coarse.network, parts["E_flame"], path, "E_flame", strict, _flame_sizes(layout)),
        "E_expression": _load(
            expression, parts["E_expression"], path, "E_expression", strict, f"expression {n_exp}"
        ),
    }
    detail = decoder = None
    if "E_detail" in parts:
        detail = ResNetDetailEncoder(N_DETAIL)
        reports["E_detail"] = _load(detail, parts["E_detail"], path, "E_detail", strict, f"detail {N_DETAIL}")
        detail.eval()
    if "D_detail" in parts:
        decoder = _detail_decoder(N_JAW + n_exp + N_DETAIL)
        reports["D_detail"] = _load(decoder, parts["D_detail"], path, "D_detail", strict)
        decoder.eval()
    absent = [name for name in ("E_detail", "D_detail") if name not in parts]
    if absent:
        _log.info("%s: no %s in the file; left as None", path, " or ".join(absent))
    return EmocaWeights(coarse.eval(), expression.eval(), detail, decoder, MappingProxyType(reports))


def _emoca_parts(data: Mapping, path: str | os.PathLike[str]) -> dict[str, dict[str, torch.Tensor]]:
    """The state dict of each EMOCA part present in ``data``, with prefixes removed."""
    lightning = data.get("state_dict")
    if isinstance(lightning, Mapping) and any(
        str(key).startswith(EMOCA_PREFIX + "E_flame.") for key in lightning
    ):
        state = _state_dict(lightning, f"{path} [state_dict]")
        prefixes = [EMOCA_PREFIX + name + "." for name in EMOCA_PARTS]
        parts = {
            name: strip_prefix(state, prefix) for name, prefix in zip(EMOCA_PARTS, prefixes, strict=True)
        }
        parts = {name: part for name, part in parts.items() if part}
        others = sorted(
            {".".join(key.split(".")[:2]) for key in state if not key.startswith(tuple(prefixes))}
        )
        _log_ignored(path, "state_dict groups (losses, face model buffers, …)", others)
        _log_ignored(path, "top-level entries", [key for key in data if key != "state_dict"])
    elif "E_flame" in data and "E_expression" in data:
        parts = {name: _state_dict(data[name], _source(path, name)) for name in EMOCA_PARTS if name in data}
        _log_ignored(path, "top-level entries", [key for key in data if key not in EMOCA_PARTS])
    else:
        raise CheckpointError(
            f"{path}: unknown EMOCA checkpoint layout: expected a Lightning 'state_dict' with "
            f"'{EMOCA_PREFIX}E_flame.*' keys or top-level 'E_flame' and 'E_expression' state dicts; "
            f"top-level keys found: {_listing(data)}"
        )
    if "E_expression" not in parts:
        raise CheckpointError(
            f"{path}: no E_expression weights (found {', '.join(parts)}); "
            "EMOCA checkpoints hold a second, expression encoder"
        )
    return parts


def _detail_decoder(latent_dim: int) -> nn.Module:
    from aucgan.nets.detail_decoder import DecaDetailDecoder

    return DecaDetailDecoder(latent_dim=latent_dim)


def _load(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    part: str,
    strict: bool,
    head_sizes: str | None = None,
) -> KeyReport:
    """Load one part strictly; a wrong head size gets its own message, naming the code sizes expected."""
    source = _source(path, part)
    if head_sizes is not None and "layers.2.weight" in state:
        expected = module.state_dict()["layers.2.weight"].shape[0]
        found = state["layers.2.weight"].shape[0]
        if found != expected:
            raise CheckpointError(
                f"{source}: regresses {found} values, the model expects {expected} ({head_sizes}); "
                "pass the code sizes the file was trained with"
            )
    report = load_strict(module, state, source, strict=strict)
    if not report.clean:
        _log.warning("%s: loaded with strict=False; %s", source, report.summary())
    return report


def _flame_sizes(layout: CodeLayout) -> str:
    return " + ".join(f"{name} {size}" for name, size in layout.items()) + f" = {layout.total}"


def _state_dict(value: object, source: str) -> dict[str, torch.Tensor]:
    """``value`` as a state dict (names → tensors), or a one-line CheckpointError naming ``source``."""
    if not isinstance(value, Mapping):
        raise CheckpointError(
            f"{source}: expected a state dict (names → tensors), found {type(value).__name__}"
        )
    wrong = [str(key) for key, tensor in value.items() if not isinstance(tensor, torch.Tensor)]
    if wrong:
        raise CheckpointError(f"{source}: entries that are not tensors: {_listing(wrong)}")
    return {str(key): tensor for key, tensor in value.items()}


def _source(path: str | os.PathLike[str], part: str) -> str:
    return f"{Path(path)} [{part}]"


def _listing(keys: Iterable[object]) -> str:
    names = [str(key).replace("\n", "\\n") for key in keys]
    if not names:
        return "none"
    shown = ", ".join(names[:_LISTED])
    return shown + (f" (+{len(names) - _LISTED} more)" if len(names) > _LISTED else "")


def _log_ignored(path: str | os.PathLike[str], what: str, names: list[str]) -> None:
    if names:
        _log.info("%s: ignoring %d %s: %s", path, len(names), what, _listing(names))
