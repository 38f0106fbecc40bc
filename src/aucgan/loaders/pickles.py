"""Read untrusted pickles that should hold only arrays (FLAME ``.pkl``, DECA's landmark ``.npy``).

A pickle is a program: every ``GLOBAL`` opcode imports a name and ``REDUCE`` calls it. The stock
``pickle.load`` / ``np.load(allow_pickle=True)`` therefore run whatever the file asks for. Here a
:class:`pickle.Unpickler` resolves globals against a fixed table and refuses everything else, with one
line naming the file and the refused global. The table holds:

* the callables NumPy uses to rebuild arrays, dtypes and scalars (both the ``numpy.core`` spelling of
  old files and the ``numpy._core`` one of NumPy 2);
* ``_codecs.encode``, which Python 3 uses for ``bytes`` in protocol 2, restricted to latin-1;
* ``set``, ``frozenset``, ``collections.OrderedDict`` and ``object`` (inert); ``copyreg._reconstructor``
  only for the stand-in classes below;
* the two callables of a pickled ``torch.Tensor``: the storage is read back with
  ``torch.load(weights_only=True)``, the tensor becomes a NumPy array;
* chumpy's classes (``chumpy.ch.Ch``, ``chumpy.ch_ops.*``, ``chumpy.reordering.*``, ...) and SciPy's
  compressed / coordinate sparse matrices: they resolve to inert stand-in classes of this module (chumpy
  and SciPy are never imported) that only record their pickled state.

After unpickling, stand-ins are replaced: a chumpy object by the NumPy array stored under ``"x"`` in its
state (where :class:`chumpy.ch.Ch` keeps its value; ``__getstate__`` pickles the instance ``__dict__``
minus two caches), a sparse matrix by a validated :class:`SparseMatrix`.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import numpy.lib.format as npy_format
import torch
from torch import _utils as torch_utils

from aucgan.loaders.common import CheckpointError

_CHUMPY_MODULES = frozenset(
    {"chumpy", "chumpy.ch", "chumpy.ch_ops", "chumpy.reordering", "chumpy.linalg", "chumpy.logic"}
)
_SPARSE_FORMATS = ("csc", "csr", "coo")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Everything a malformed or hostile (but refused) pickle can raise while it is being read.
_READ_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    TypeError,
    AttributeError,
    IndexError,
    KeyError,
    struct.error,
    OverflowError,
    UnicodeDecodeError,
    MemoryError,
    RecursionError,
    RuntimeError,
)


@dataclass(frozen=True)
class SparseMatrix:
    """A sparse matrix read from a pickle, in compressed (CSC/CSR) or coordinate (COO) form.

    Attributes:
        format: ``"csc"``, ``"csr"`` or ``"coo"``.
        shape: ``(rows, columns)``.
        data: ``(N,)`` stored values.
        indices: ``(N,)`` row (CSC) or column (CSR) indices; for COO the ``(N,)`` row indices.
        indptr: ``(columns + 1,)`` (CSC) or ``(rows + 1,)`` (CSR) offsets into ``data``; for COO the
            ``(N,)`` column indices.
    """

    format: str
    shape: tuple[int, int]
    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray

    def toarray(self) -> np.ndarray:
        """The dense ``(rows, columns)`` matrix; duplicate entries are summed (SciPy's convention)."""
        dense = np.zeros(self.shape, dtype=self.data.dtype)
        if self.format == "coo":
            rows, cols = self.indices, self.indptr
        else:
            counts = np.diff(self.indptr)
            outer = np.repeat(np.arange(len(counts)), counts)
            rows, cols = (self.indices, outer) if self.format == "csc" else (outer, self.indices)
        np.add.at(dense, (rows, cols), self.data)
        return dense


class _Refused(pickle.UnpicklingError):
    """A global the allow-list knows, called in a way it does not allow; ``str()`` names the call."""


class _StandIn:
    """An inert object standing for a class of chumpy or SciPy; it only keeps its pickled state."""

    source = ""

    def __new__(cls, *args: Any) -> _StandIn:
        if args:
            raise _Refused(f"{cls.source} with constructor arguments")
        instance = object.__new__(cls)
        instance.state = None
        return instance

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _ChumpyStandIn(_StandIn):
    pass


class _SparseStandIn(_StandIn):
    format = ""


def _latin1_encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode`` as Python 3 emits it for ``bytes`` in protocol 2 pickles, latin-1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise _Refused(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


def _load_storage_from_bytes(blob: Any) -> Any:
    """``torch.storage._load_from_bytes`` without code execution: the blob goes through ``weights_only``."""
    if not isinstance(blob, (bytes, bytearray)):
        raise _Refused(f"torch.storage._load_from_bytes of a {type(blob).__name__}")
    storage = torch.load(io.BytesIO(bytes(blob)), map_location="cpu", weights_only=True)
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"expected a torch storage, found {type(storage).__name__}")
    return storage


def _rebuild_tensor(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    hooks: Any = None,
    metadata: Any = None,
) -> np.ndarray:
    """``torch._utils._rebuild_tensor_v2`` with checked arguments; returns the tensor as a NumPy array."""

    def ints(value: Any) -> bool:
        return isinstance(value, tuple) and all(type(v) is int and v >= 0 for v in value)

    valid = (
        isinstance(storage, (torch.TypedStorage, torch.UntypedStorage))
        and type(offset) is int
        and offset >= 0
        and ints(size)
        and ints(stride)
        and len(size) == len(stride)
        and isinstance(requires_grad, bool)
        and not hooks
        and not metadata
    )
    if not valid:
        raise pickle.UnpicklingError("malformed pickled tensor")
    tensor = torch_utils._rebuild_tensor_v2(storage, offset, size, stride, False, collections.OrderedDict())
    return tensor.detach().numpy().copy()


def _reconstructor(cls: Any, base: Any, state: Any) -> Any:
    """``copyreg._reconstructor`` (old-style reduce of plain classes), for the stand-in classes only."""
    if not (isinstance(cls, type) and issubclass(cls, _StandIn)) or base is not object or state is not None:
        name = getattr(cls, "__qualname__", type(cls).__name__)
        raise _Refused(f"copyreg._reconstructor of {getattr(cls, '__module__', '?')}.{name}")
    return cls.__new__(cls)


def _numpy_globals() -> dict[tuple[str, str], Any]:
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    numeric = np._core.numeric if hasattr(np, "_core") else np.core.numeric
    table: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        for module in (f"{package}.multiarray", f"{package}._multiarray_umath"):
            table[(module, "_reconstruct")] = multiarray._reconstruct
            table[(module, "scalar")] = multiarray.scalar
        table[(f"{package}.numeric", "_frombuffer")] = numeric._frombuffer
    return table


def _allowed_globals() -> dict[tuple[str, str], Any]:
    table = _numpy_globals()
    for builtins_name in ("builtins", "__builtin__"):
        table[(builtins_name, "object")] = object
        table[(builtins_name, "set")] = set
        table[(builtins_name, "frozenset")] = frozenset
    for copyreg_name in ("copyreg", "copy_reg"):
        table[(copyreg_name, "_reconstructor")] = _reconstructor
    table[("_codecs", "encode")] = _latin1_encode
    table[("collections", "OrderedDict")] = collections.OrderedDict
    table[("torch._utils", "_rebuild_tensor_v2")] = _rebuild_tensor
    table[("torch.storage", "_load_from_bytes")] = _load_storage_from_bytes
    return table


def _sparse_format(module: str, name: str) -> str | None:
    for fmt in _SPARSE_FORMATS:
        if module in (f"scipy.sparse.{fmt}", f"scipy.sparse._{fmt}", "scipy.sparse") and name in (
            f"{fmt}_matrix",
            f"{fmt}_array",
        ):
            return fmt
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves globals against the allow-list only; see the module docstring."""

    def __init__(self, file: BinaryIO, source: str, what: str) -> None:
        super().__init__(file, encoding="latin1")
        self.source = source
        self.what = what
        self.allowed = _allowed_globals()
        self.stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        key = (module, name)
        if key in self.allowed:
            return self.allowed[key]
        if key in self.stand_ins:
            return self.stand_ins[key]
        base: type | None = None
        attributes: dict[str, Any] = {"source": f"{module}.{name}"}
        if module in _CHUMPY_MODULES and _IDENTIFIER.match(name):
            base = _ChumpyStandIn
        elif (fmt := _sparse_format(module, name)) is not None:
            base, attributes["format"] = _SparseStandIn, fmt
        if base is None:
            raise CheckpointError(
                f"{self.source}: refused to unpickle {module}.{name} ({self.what}); only arrays are allowed"
            )
        self.stand_ins[key] = type(f"StandIn_{name}", (base,), attributes)
        return self.stand_ins[key]


def _sparse_from_state(stand_in: _SparseStandIn, materialize: Callable[[Any], Any]) -> SparseMatrix:
    state = stand_in.state
    if not isinstance(state, dict):
        raise ValueError(f"{stand_in.source} without its arrays")
    shape = state.get("_shape", state.get("shape"))
    if not (isinstance(shape, tuple) and len(shape) == 2 and all(type(n) is int and n >= 0 for n in shape)):
        raise ValueError(f"{stand_in.source} with a malformed shape {shape!r}")
    fmt = stand_in.format
    if fmt == "coo":
        if "coords" in state:
            coords = materialize(state["coords"])
            if not (isinstance(coords, tuple) and len(coords) == 2):
                raise ValueError(f"{stand_in.source} with malformed coordinates")
            rows, cols = coords
        else:
            rows, cols = materialize(state.get("row")), materialize(state.get("col"))
        parts = (materialize(state.get("data")), rows, cols)
    else:
        parts = tuple(materialize(state.get(k)) for k in ("data", "indices", "indptr"))
    if not all(isinstance(p, np.ndarray) and p.ndim == 1 for p in parts):
        raise ValueError(f"{stand_in.source} whose data / indices are not 1-D arrays")
    data, first, second = parts
    if not (np.issubdtype(first.dtype, np.integer) and np.issubdtype(second.dtype, np.integer)):
        raise ValueError(f"{stand_in.source} with non-integer indices")
    first, second = first.astype(np.int64), second.astype(np.int64)
    rows, cols = shape
    if fmt == "coo":
        ok = len(first) == len(second) == len(data)
        ok = ok and bool(np.all((first >= 0) & (first < rows)) and np.all((second >= 0) & (second < cols)))
    else:
        inner, outer = (rows, cols) if fmt == "csc" else (cols, rows)
        ok = len(second) == outer + 1 and len(first) == len(data) and second[0] == 0
        ok = ok and second[-1] == len(data) and bool(np.all(np.diff(second) >= 0))
        ok = ok and bool(np.all((first >= 0) & (first < inner)))
    if not ok:
        raise ValueError(f"{stand_in.source} with inconsistent indices")
    return SparseMatrix(fmt, (rows, cols), data, first, second)


def _materialize(obj: Any, memo: dict[int, Any]) -> Any:
    """Replace stand-ins by arrays, recursively through dicts, lists, tuples and object arrays."""
    key = id(obj)
    if key in memo:
        return memo[key]

    def inner(value: Any) -> Any:
        return _materialize(value, memo)

    if isinstance(obj, _ChumpyStandIn):
        state = obj.state
        if not isinstance(state, dict) or "x" not in state:
            raise ValueError(
                f"chumpy {obj.source} holds no stored value (only chumpy.ch.Ch keeps one); "
                "convert the file to plain NumPy arrays"
            )
        value = inner(state["x"])
        result: Any = np.asarray(value)
        if result.dtype == object:
            raise ValueError(f"chumpy {obj.source} holds a {type(value).__name__}, not numbers")
    elif isinstance(obj, _SparseStandIn):
        result = _sparse_from_state(obj, inner)
    elif isinstance(obj, _StandIn):
        raise ValueError(f"unexpected {obj.source}")
    elif isinstance(obj, dict):
        result = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        memo[key] = result
        for k, v in obj.items():
            result[inner(k)] = inner(v)
    elif isinstance(obj, list):
        result = []
        memo[key] = result
        result.extend(inner(v) for v in obj)
    elif isinstance(obj, tuple):
        result = tuple(inner(v) for v in obj)
    elif isinstance(obj, np.ndarray) and obj.dtype == object:
        result = np.empty(obj.shape, dtype=object)
        memo[key] = result
        for index in np.ndindex(obj.shape):
            result[index] = inner(obj[index])
    else:
        result = obj
    memo[key] = result
    return result


def _describe_failure(head: bytes, error: BaseException) -> str:
    text = head.lstrip().lower()
    if not head:
        return "an empty file"
    if text.startswith((b"<!doctype html", b"<html")):
        return "an HTML page, not a pickle (a download that saved a web page?)"
    if isinstance(error, EOFError) or "truncated" in str(error) or "ran out of input" in str(error).lower():
        return "truncated pickle; download the file again"
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return f"not a readable pickle ({first})"


def _unpickle(handle: BinaryIO, source: str, what: str) -> Any:
    start = handle.tell()
    head = handle.read(64)
    handle.seek(start)
    try:
        return _materialize(_RestrictedUnpickler(handle, source, what).load(), {})
    except CheckpointError:
        raise
    except _Refused as refused:
        raise CheckpointError(
            f"{source}: refused to unpickle {refused} ({what}); only arrays are allowed"
        ) from None
    except _READ_ERRORS as error:
        raise CheckpointError(f"{source}: {what}: {_describe_failure(head, error)}") from None


def restricted_load(file_or_path: str | os.PathLike[str] | BinaryIO, what: str) -> Any:
    """Unpickle a file that may hold only arrays, never running code from it.

    Args:
        file_or_path: a path, or a binary file object positioned at the pickle.
        what: what the file is, for messages, e.g. ``"FLAME model"``.

    Returns:
        The unpickled object, with chumpy arrays turned into ``np.ndarray``, pickled ``torch.Tensor``\\ s
        into ``np.ndarray`` and SciPy sparse matrices into :class:`SparseMatrix`.

    Raises:
        CheckpointError: one line naming the file: a refused global
            (``"<file>: refused to unpickle <module>.<name> (<what>); only arrays are allowed"``), a missing,
            empty, truncated or non-pickle file, or a chumpy expression without a stored value.
    """
    if isinstance(file_or_path, (str, os.PathLike)):
        path = Path(file_or_path)
        if not path.is_file():
            raise CheckpointError(f"{path}: no such file ({what})")
        with open(path, "rb") as handle:
            return _unpickle(handle, str(path), what)
    return _unpickle(file_or_path, str(getattr(file_or_path, "name", "<stream>")), what)


def load_npy_dict(path: str | os.PathLike[str], what: str) -> dict[str, Any]:
    """Read a ``.npy`` file that holds a pickled dict (``np.save(path, some_dict)``) without running code.

    The header is parsed with :mod:`numpy.lib.format`; the payload goes through :func:`restricted_load`.

    Returns:
        The dict, its arrays as ``np.ndarray`` (pickled tensors included).

    Raises:
        CheckpointError: one line naming the file (see :func:`restricted_load`), also for a ``.npy`` that
            holds a plain array rather than a pickled dict.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file ({what})")
    with open(path, "rb") as handle:
        head = handle.read(64)
        handle.seek(0)
        try:
            version = npy_format.read_magic(handle)
            if version == (1, 0):
                _, _, dtype = npy_format.read_array_header_1_0(handle)
            elif version == (2, 0):
                _, _, dtype = npy_format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except _READ_ERRORS as error:
            raise CheckpointError(f"{path}: {what}: {_describe_npy_failure(head, error)}") from None
        if dtype != np.dtype(object):
            raise CheckpointError(f"{path}: {what}: holds a plain {dtype} array, not a pickled dict")
        data = _unpickle(handle, str(path), what)
    if isinstance(data, np.ndarray) and data.dtype == object and data.shape == ():
        data = data.item()
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {what}: expected a pickled dict, found {type(data).__name__}")
    return data


def _describe_npy_failure(head: bytes, error: BaseException) -> str:
    if head.startswith(b"\x93NUMPY"):
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"truncated or corrupt .npy header ({first})"
    if not head or head.lstrip().lower().startswith((b"<!doctype html", b"<html")):
        return _describe_failure(head, error)
    return "not a .npy file"
