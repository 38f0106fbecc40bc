import contextlib
import io
import os
import pickle
import struct
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from aucgan.loaders.common import CheckpointError
from aucgan.loaders.pickles import SparseMatrix, load_npy_dict, restricted_load

sparse = pytest.importorskip("scipy.sparse")


@contextlib.contextmanager
def fake_chumpy():
    """Register stand-ins for ``chumpy``, ``chumpy.ch`` and ``chumpy.ch_ops`` only while pickling.

    ``Ch`` pickles like the real class: ``__getstate__`` returns the instance dict minus the two caches, the
    value under ``"x"`` (float64). ``add`` is an expression: its state holds its operands, not a value.
    """

    class Ch:
        def __init__(self, x):
            self.x = np.asarray(x, dtype=np.float64)
            self._dirty_vars = set()
            self._itr = None
            self._depends_on_deps = {}
            self._make_dense = False
            self._make_sparse = False
            self._parents = {}
            self._cache = {"r": None}

        def __getstate__(self):
            state = dict(self.__dict__)
            del state["_parents"], state["_cache"]
            return state

    class add(Ch):
        def __init__(self, a, b):
            super().__init__(0.0)
            del self.x
            self.a, self.b = a, b

    modules = {name: types.ModuleType(name) for name in ("chumpy", "chumpy.ch", "chumpy.ch_ops")}
    for cls, module in ((Ch, "chumpy.ch"), (add, "chumpy.ch_ops")):
        cls.__module__, cls.__qualname__ = module, cls.__name__
        setattr(modules[module], cls.__name__, cls)
    try:
        sys.modules.update(modules)
        yield types.SimpleNamespace(Ch=Ch, add=add)
    finally:
        for name in modules:
            sys.modules.pop(name, None)


class Py2StylePickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it: ``bytes`` and ``str`` as (latin-1) ``BINSTRING``, no ``_codecs``."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_binstring(self, obj):
        data = obj if isinstance(obj, bytes) else obj.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_binstring
    dispatch[str] = save_binstring


def py2_style_dumps(obj) -> bytes:
    buffer = io.BytesIO()
    Py2StylePickler(buffer, protocol=2).dump(obj)
    blob = buffer.getvalue()
    for new, old in (
        (b"numpy._core.multiarray", b"numpy.core.multiarray"),
        (b"scipy.sparse._csc", b"scipy.sparse.csc"),
    ):
        blob = blob.replace(b"c" + new + b"\n", b"c" + old + b"\n")
    return blob


class Payload:
    """Unpickling this calls ``function(*args)``; a safe loader must refuse before the call."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return (self.function, self.args)


def one_line_error(load, path) -> str:
    with pytest.raises(CheckpointError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    return message


def sample(rng: np.random.Generator) -> dict:
    dense = rng.normal(size=(5, 7)) * (rng.random((5, 7)) < 0.4)
    return {
        "float": rng.normal(size=(4, 3)),
        "int": rng.integers(-5, 5, size=(6,), dtype=np.int32),
        "uint": np.array([[2**32 - 1, 0, 1]], dtype=np.uint32),
        "scalar": np.float32(2.5),
        "fortran": np.asfortranarray(rng.normal(size=(3, 2))),
        "csc": sparse.csc_matrix(dense),
        "csr": sparse.csr_matrix(dense),
        "coo": sparse.coo_matrix(dense),
        "tensor": torch.arange(12, dtype=torch.float32).reshape(3, 4)[:, 1:],
        "text": "lbs",
        "nested": [np.arange(3), (np.eye(2), {"k": np.ones(1)})],
    }


def check_sample(loaded: dict, original: dict) -> None:
    for key in ("float", "int", "uint", "fortran"):
        np.testing.assert_array_equal(loaded[key], original[key])
        assert loaded[key].dtype == original[key].dtype
    assert loaded["scalar"] == original["scalar"] and loaded["scalar"].dtype == np.float32
    for key in ("csc", "csr", "coo"):
        assert isinstance(loaded[key], SparseMatrix) and loaded[key].format == key
        np.testing.assert_array_equal(loaded[key].toarray(), original[key].toarray())
    assert isinstance(loaded["tensor"], np.ndarray)
    np.testing.assert_array_equal(loaded["tensor"], original["tensor"].numpy())
    assert loaded["text"] == "lbs"
    np.testing.assert_array_equal(loaded["nested"][1][1]["k"], np.ones(1))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_arrays_sparse_matrices_and_tensors_load_in_every_protocol(protocol):
    original = sample(np.random.default_rng(protocol))
    loaded = restricted_load(io.BytesIO(pickle.dumps(original, protocol=protocol)), "test data")
    check_sample(loaded, original)


def test_python2_style_pickle_with_old_module_names(tmp_path):
    original = sample(np.random.default_rng(7))
    del original["csr"], original["coo"], original["tensor"]
    blob = py2_style_dumps(original)
    assert b"numpy.core.multiarray" in blob and b"scipy.sparse.csc\n" in blob and b"_codecs" not in blob
    path = tmp_path / "old.pkl"
    path.write_bytes(blob)
    loaded = restricted_load(path, "old model")
    for key in ("float", "int", "uint", "fortran"):
        np.testing.assert_array_equal(loaded[key], original[key])
    np.testing.assert_array_equal(loaded["csc"].toarray(), original["csc"].toarray())


def test_chumpy_arrays_load_without_chumpy(tmp_path):
    value = np.random.default_rng(1).normal(size=(4, 3, 5))
    with fake_chumpy() as ch:
        blobs = [pickle.dumps({"shapedirs": ch.Ch(value), "n": 3}, protocol=p) for p in (0, 2, 4)]
    assert "chumpy" not in sys.modules and "chumpy.ch" not in sys.modules
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(blobs[1])
    for blob in blobs:
        loaded = restricted_load(io.BytesIO(blob), "model")
        assert type(loaded["shapedirs"]) is np.ndarray
        np.testing.assert_array_equal(loaded["shapedirs"], value)
        assert loaded["n"] == 3
    assert "chumpy" not in sys.modules


def test_a_chumpy_expression_without_a_value_is_refused(tmp_path):
    with fake_chumpy() as ch:
        blob = pickle.dumps({"v": ch.add(ch.Ch(np.ones(2)), ch.Ch(np.ones(2)))}, protocol=2)
    path = tmp_path / "expr.pkl"
    path.write_bytes(blob)
    message = one_line_error(lambda p: restricted_load(p, "model"), path)
    assert "chumpy.ch_ops.add" in message and "no stored value" in message


def test_sparse_matrix_toarray_matches_scipy_with_duplicates():
    rows, cols = np.array([0, 2, 2, 1]), np.array([1, 0, 0, 3])
    data = np.array([1.0, 2.0, 5.0, -1.0])
    matrix = sparse.coo_matrix((data, (rows, cols)), shape=(3, 4))
    for fmt in ("coo", "csc", "csr"):
        original = matrix.asformat(fmt)
        if fmt != "coo":
            original.has_canonical_format = False
        loaded = restricted_load(io.BytesIO(pickle.dumps(original, protocol=2)), "m")
        np.testing.assert_array_equal(loaded.toarray(), original.toarray())


def test_sparse_matrix_with_out_of_range_indices_is_refused(tmp_path):
    matrix = sparse.csc_matrix(np.eye(3))
    matrix.indices = np.array([0, 1, 7], dtype=np.int32)
    path = tmp_path / "bad_sparse.pkl"
    path.write_bytes(pickle.dumps({"J_regressor": matrix}, protocol=2))
    assert "inconsistent indices" in one_line_error(lambda p: restricted_load(p, "model"), path)


@pytest.mark.parametrize("where", ["top", "nested"])
@pytest.mark.parametrize(
    ("function", "refused"),
    [
        (os.system, f"{os.system.__module__}.system"),
        (subprocess.Popen, "subprocess.Popen"),
        (eval, "builtins.eval"),
        (open, "io.open"),
        (np.load, "numpy.load"),
    ],
)
def test_code_in_a_pickle_is_refused_and_never_runs(tmp_path, function, refused, where):
    marker = tmp_path / "payload-ran"
    args = {
        os.system: (f"touch {marker}",),
        subprocess.Popen: (["touch", str(marker)],),
        eval: (f"open({str(marker)!r}, 'w')",),
        open: (str(marker), "w"),
        np.load: (str(marker),),
    }[function]
    payload = Payload(function, *args)
    obj = payload if where == "top" else {"v_template": np.zeros((2, 3)), "extra": [payload]}
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(obj, protocol=2, fix_imports=False))
    message = one_line_error(lambda p: restricted_load(p, "FLAME model"), path)
    assert f"refused to unpickle {refused} (FLAME model); only arrays are allowed" in message
    assert not marker.exists()


def test_handwritten_globals_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "payload-ran"
    for module in ("builtins", "__builtin__"):
        path = tmp_path / f"{module}.pkl"
        path.write_bytes(b"c" + module.encode() + b"\nopen\n(V" + str(marker).encode() + b"\nVw\ntR.")
        assert f"refused to unpickle {module}.open" in one_line_error(lambda p: restricted_load(p, "m"), path)
        assert not marker.exists()


def test_allowed_globals_used_the_wrong_way_are_refused(tmp_path):
    cases = {
        "reconstructor.pkl": (
            b"ccopy_reg\n_reconstructor\n(ccollections\nOrderedDict\nc__builtin__\nobject\nNtR.",
            "copyreg._reconstructor of collections.OrderedDict",
        ),
        "codecs.pkl": (b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x05\x00\x00\x00rot13\x86R.", "rot13"),
        "chumpy_args.pkl": (
            b"\x80\x02cchumpy.ch\nCh\nK\x01\x85R.",
            "chumpy.ch.Ch with constructor arguments",
        ),
    }
    for name, (blob, expected) in cases.items():
        path = tmp_path / name
        path.write_bytes(blob)
        message = one_line_error(lambda p: restricted_load(p, "model"), path)
        assert "refused to unpickle" in message and expected in message


def test_bad_files_give_one_line_errors(tmp_path):
    def load(path):
        return restricted_load(path, "FLAME model")

    assert "no such file" in one_line_error(load, tmp_path / "missing.pkl")
    (tmp_path / "empty.pkl").write_bytes(b"")
    assert "empty" in one_line_error(load, tmp_path / "empty.pkl")
    (tmp_path / "page.pkl").write_text("<!DOCTYPE html><html><body>Sign in</body></html>")
    assert "HTML" in one_line_error(load, tmp_path / "page.pkl")
    good = pickle.dumps(sample(np.random.default_rng(0)), protocol=2)
    for cut in (len(good) // 3, len(good) - 1):
        (tmp_path / "cut.pkl").write_bytes(good[:cut])
        assert "truncated" in one_line_error(load, tmp_path / "cut.pkl")
    (tmp_path / "text.pkl").write_text("weights\n")
    assert "not a readable pickle" in one_line_error(load, tmp_path / "text.pkl")


def test_a_stream_is_named_in_errors():
    with pytest.raises(
        CheckpointError, match=f"^<stream>: refused to unpickle {os.system.__module__}.system"
    ):
        restricted_load(io.BytesIO(pickle.dumps(Payload(os.system, "true"))), "model")


def save_npy(path, obj):
    np.save(path, obj, allow_pickle=True)
    return path


def test_npy_dict_with_arrays_and_tensors(tmp_path):
    rng = np.random.default_rng(3)
    original = {
        "static_lmk_faces_idx": rng.integers(0, 9, size=(51,)),
        "static_lmk_bary_coords": rng.random((51, 3)),
        "dynamic_lmk_faces_idx": torch.from_numpy(rng.integers(0, 9, size=(79, 17))),
        "dynamic_lmk_bary_coords": torch.from_numpy(rng.random((79, 17, 3))).float(),
    }
    loaded = load_npy_dict(save_npy(tmp_path / "emb.npy", original), "landmark embedding")
    assert set(loaded) == set(original)
    for key, value in original.items():
        expected = value.numpy() if isinstance(value, torch.Tensor) else value
        assert isinstance(loaded[key], np.ndarray) and loaded[key].dtype == expected.dtype
        np.testing.assert_array_equal(loaded[key], expected)


def test_npy_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload-ran"
    path = save_npy(tmp_path / "evil.npy", {"static_lmk_faces_idx": Payload(open, str(marker), "w")})
    message = one_line_error(lambda p: load_npy_dict(p, "landmark embedding"), path)
    assert "refused to unpickle io.open (landmark embedding)" in message
    assert not marker.exists()


def test_bad_npy_files_give_one_line_errors(tmp_path):
    def load(path):
        return load_npy_dict(path, "landmark embedding")

    assert "no such file" in one_line_error(load, tmp_path / "missing.npy")
    assert "plain float64 array" in one_line_error(load, save_npy(tmp_path / "plain.npy", np.zeros(3)))
    assert "expected a pickled dict" in one_line_error(
        load, save_npy(tmp_path / "list.npy", np.array([1, "a"], dtype=object))
    )
    good = save_npy(tmp_path / "good.npy", {"a": np.zeros(100)}).read_bytes()
    (tmp_path / "cut.npy").write_bytes(good[: len(good) - 20])
    assert "truncated" in one_line_error(load, tmp_path / "cut.npy")
    (tmp_path / "header.npy").write_bytes(good[:20])
    assert ".npy header" in one_line_error(load, tmp_path / "header.npy")
    (tmp_path / "page.npy").write_text("<html><body>Not found</body></html>")
    assert "HTML" in one_line_error(load, tmp_path / "page.npy")
    (tmp_path / "pickle.npy").write_bytes(pickle.dumps({"a": 1}))
    assert "not a .npy file" in one_line_error(load, tmp_path / "pickle.npy")
