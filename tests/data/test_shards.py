"""Tests of the synthetic dataset on disk and on the fly (:mod:`aucgan.data.shards`).

Written shards read back bit for bit equal to the samples generated on the fly, whatever the number of
writer processes; every kind of broken dataset folder gives a one-line :class:`DatasetError` naming the file.
"""

from __future__ import annotations

import json
import pickle
import shutil
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from aucgan.data.shards import (
    FORMAT,
    VERSION,
    DatasetError,
    ShardedFaces,
    SyntheticFaces,
    WorldParameters,
    quiet_when_main_is_gone,
    split_index,
    worker_ignores_stop_signals,
    write_dataset,
)
from aucgan.data.synthetic import SyntheticSample, collate, split_of_identity

PARAMETERS = WorldParameters(seed=5, image_size=48, uv_size=48, images_per_identity=3)
COUNTS = {"train": 10, "val": 3, "test": 3}
SHARD_SIZE = 4


def assert_samples_identical(actual: SyntheticSample, expected: SyntheticSample) -> None:
    for f in fields(SyntheticSample):
        a, b = getattr(actual, f.name), getattr(expected, f.name)
        assert a.dtype == b.dtype and a.shape == b.shape, (f.name, a.dtype, b.dtype, a.shape, b.shape)
        assert torch.equal(a, b), f"{f.name} differs"


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dataset")
    write_dataset(root, PARAMETERS, COUNTS, shard_size=SHARD_SIZE, workers=0)
    return root


@pytest.fixture
def copy(written, tmp_path) -> Path:
    """A private copy of the written dataset, to break."""
    return Path(shutil.copytree(written, tmp_path / "copy"))


def one_line_error(root: Path, split: str = "train", item: int | None = None) -> str:
    with pytest.raises(DatasetError) as info:
        dataset = ShardedFaces(root, split)
        if item is not None:
            dataset[item]
    message = str(info.value)
    assert "\n" not in message and message.strip() == message
    return message


# Round trip ---------------------------------------------------------------------------------------------


def test_shards_read_back_bit_for_bit_as_generated(written):
    for split, count in COUNTS.items():
        stored = ShardedFaces(written, split)
        generated = SyntheticFaces(PARAMETERS, split, count)
        assert len(stored) == len(generated) == count
        assert stored.parameters == PARAMETERS
        for item in range(count):
            sample = stored[item]
            assert_samples_identical(sample, generated[item])
            assert int(sample.index) == split_index(split, item, PARAMETERS.images_per_identity)
            assert split_of_identity(int(sample.identity)) == split


def test_random_access_across_shards_matches_sequential_access(written):
    stored = ShardedFaces(written, "train")
    sequential = [stored[i] for i in range(len(stored))]
    fresh = ShardedFaces(written, "train")
    for item in [9, 0, 5, 4, 9, 3, 8]:
        assert_samples_identical(fresh[item], sequential[item])


def test_manifest_describes_the_shards(written):
    manifest = json.loads((written / "manifest.json").read_text())
    assert manifest["format"] == FORMAT and manifest["version"] == VERSION
    assert manifest["world"] == asdict(PARAMETERS)
    for split, count in COUNTS.items():
        entry = manifest["splits"][split]
        assert entry["count"] == count
        sizes = [shard["count"] for shard in entry["shards"]]
        assert sum(sizes) == count and all(0 < size <= SHARD_SIZE for size in sizes)
        assert len(sizes) == -(-count // SHARD_SIZE)
        for shard in entry["shards"]:
            with np.load(written / shard["file"], allow_pickle=False) as archive:
                assert set(archive.files) == {f.name for f in fields(SyntheticSample)}
                assert all(len(archive[name]) == shard["count"] for name in archive.files)
    listed = {shard["file"] for entry in manifest["splits"].values() for shard in entry["shards"]}
    assert {p.name for p in written.iterdir()} == listed | {"manifest.json"}  # no temporary files left


def test_two_writer_processes_write_the_same_dataset(written, tmp_path):
    root = tmp_path / "parallel"
    write_dataset(root, PARAMETERS, {"train": 6, "test": 2}, shard_size=SHARD_SIZE, workers=2)
    for split, count in (("train", 6), ("test", 2)):
        parallel, serial = ShardedFaces(root, split), ShardedFaces(written, split)
        assert len(parallel) == count
        for item in range(count):
            assert_samples_identical(parallel[item], serial[item])


def test_manifest_is_written_last_and_a_stale_one_is_removed_first(written, tmp_path):
    root = tmp_path / "rewrite"
    shutil.copytree(written, root)  # an earlier dataset with a manifest
    seen = []

    def progress(count: int) -> None:
        seen.append((count, (root / "manifest.json").exists()))

    manifest = write_dataset(
        root, PARAMETERS, {"train": 5, "val": 2}, shard_size=SHARD_SIZE, workers=0, progress=progress
    )
    assert manifest == root / "manifest.json" and manifest.exists()
    assert sum(count for count, _ in seen) == 7
    assert not any(exists for _, exists in seen), "a manifest existed while shards were being written"
    stamp = manifest.stat().st_mtime_ns
    for entry in json.loads(manifest.read_text())["splits"].values():
        for shard in entry["shards"]:
            assert (root / shard["file"]).stat().st_mtime_ns <= stamp
    assert len(ShardedFaces(root, "train")) == 5
    assert one_line_error(root, "test").count("no split 'test'") == 1


# Broken folders -----------------------------------------------------------------------------------------


def test_missing_manifest(tmp_path):
    message = one_line_error(tmp_path)
    assert str(tmp_path / "manifest.json") in message and "aucgan synth" in message


@pytest.mark.parametrize(
    "text",
    [
        "{not json",
        "",
        "[1, 2]",
        json.dumps({"format": "something-else", "version": VERSION}),
        json.dumps({"format": FORMAT, "version": VERSION + 1}),
        json.dumps({"format": FORMAT, "version": VERSION, "splits": {"train": {"count": 1}}}),
        json.dumps({"format": FORMAT, "version": VERSION, "world": {"colour": 1}, "splits": {"train": {}}}),
    ],
    ids=["syntax", "empty", "list", "format", "version", "no-world", "bad-world"],
)
def test_corrupt_manifest(copy, text):
    (copy / "manifest.json").write_text(text)
    assert str(copy / "manifest.json") in one_line_error(copy)


def test_manifest_that_is_not_text(copy):
    (copy / "manifest.json").write_bytes(b"\xff\xfe\x00garbage")
    assert str(copy / "manifest.json") in one_line_error(copy)


def test_missing_shard(copy):
    (copy / "train-00001.npz").unlink()
    message = one_line_error(copy)
    assert str(copy / "train-00001.npz") in message and "missing" in message
    ShardedFaces(copy, "val")  # the other splits are still readable


@pytest.mark.parametrize("split", ["validation", "Train", ""])
def test_wrong_split(written, split):
    message = one_line_error(written, split)
    assert str(written / "manifest.json") in message and repr(split) in message
    assert "train, val, test" in message


@pytest.mark.parametrize("keep", [0.5, 0.97, 0.0])
def test_truncated_shard(copy, keep):
    shard = copy / "train-00001.npz"
    data = shard.read_bytes()
    shard.write_bytes(data[: int(len(data) * keep)])
    dataset = ShardedFaces(copy, "train")
    dataset[0]  # the intact first shard still reads
    assert str(shard) in one_line_error(copy, item=SHARD_SIZE)


def test_corrupted_shard_contents(copy):
    shard = copy / "train-00000.npz"
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 2000] = bytes(2000)
    shard.write_bytes(bytes(data))
    with pytest.raises(DatasetError) as info:
        dataset = ShardedFaces(copy, "train")
        for item in range(SHARD_SIZE):
            dataset[item]
    assert str(shard) in str(info.value) and "\n" not in str(info.value)


def test_shard_that_is_not_an_archive(copy):
    shard = copy / "train-00000.npz"
    shard.write_bytes(pickle.dumps({"image": 1}))
    assert str(shard) in one_line_error(copy, item=0)


def test_shard_missing_a_field_or_rows(copy):
    shard = copy / "train-00000.npz"
    with np.load(shard, allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    np.savez(shard, **{name: value for name, value in arrays.items() if name != "uv_albedo"})
    assert str(shard) in one_line_error(copy, item=1)
    np.savez(shard, **{name: value[:-1] for name, value in arrays.items()})
    assert str(shard) in one_line_error(copy, item=0)


def test_items_out_of_range(written):
    stored = ShardedFaces(written, "val")
    generated = SyntheticFaces(PARAMETERS, "val", 3)
    for dataset in (stored, generated):
        for item in (-1, 3):
            with pytest.raises(IndexError):
                dataset[item]


def test_generated_dataset_refuses_bad_arguments():
    with pytest.raises(ValueError, match="'dev'"):
        SyntheticFaces(PARAMETERS, "dev", 3)
    with pytest.raises(ValueError, match="-1"):
        SyntheticFaces(PARAMETERS, "train", -1)


# On-the-fly generation in a DataLoader -------------------------------------------------------------------


def test_generated_dataset_pickles_without_its_world():
    dataset = SyntheticFaces(PARAMETERS, "test", 4)
    first = dataset[0]
    clone = pickle.loads(pickle.dumps(dataset))
    assert clone._world is None and len(pickle.dumps(dataset)) < 2000
    assert_samples_identical(clone[0], first)


def test_data_loader_with_two_workers_matches_in_process_generation():
    dataset = SyntheticFaces(PARAMETERS, "train", 7)
    loader = DataLoader(dataset, batch_size=3, num_workers=2, collate_fn=collate)
    batches = list(loader)
    assert [int(batch.index.shape[0]) for batch in batches] == [3, 3, 1]
    expected = [collate([dataset[i] for i in range(start, min(7, start + 3))]) for start in (0, 3, 6)]
    for batch, reference in zip(batches, expected, strict=True):
        assert isinstance(batch, SyntheticSample)
        assert_samples_identical(batch, reference)


class _StopAfter:
    """A progress callback that interrupts a write (as Ctrl-C would) once ``samples`` are reported."""

    def __init__(self, samples: int) -> None:
        self.samples, self.seen = samples, 0

    def __call__(self, count: int) -> None:
        self.seen += count
        if self.seen >= self.samples:
            raise KeyboardInterrupt


def test_an_interrupted_write_continues_where_it_stopped_and_equals_an_uninterrupted_one(written, tmp_path):
    root = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        write_dataset(root, PARAMETERS, COUNTS, shard_size=SHARD_SIZE, workers=0, progress=_StopAfter(8))
    assert not (root / "manifest.json").exists() and (root / "in_progress.json").is_file()
    assert "was interrupted; run the same command again to finish it" in one_line_error(root)
    kept = {path.name: path.stat().st_mtime_ns for path in root.glob("train-*.npz")}
    assert sorted(kept) == ["train-00000.npz", "train-00001.npz"]
    generated = []
    original = SyntheticFaces.__getitem__

    def counted(self, item):
        generated.append((self.split, item))
        return original(self, item)

    reported = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SyntheticFaces, "__getitem__", counted)
        write_dataset(root, PARAMETERS, COUNTS, shard_size=SHARD_SIZE, workers=0, progress=reported.append)
    assert sorted(item for split, item in generated if split == "train") == [8, 9]
    assert sum(reported) == sum(COUNTS.values())
    assert {name: (root / name).stat().st_mtime_ns for name in kept} == kept, "kept shards were rewritten"
    assert not (root / "in_progress.json").exists()
    assert json.loads((root / "manifest.json").read_text()) == json.loads(
        (written / "manifest.json").read_text()
    )
    for split, count in COUNTS.items():
        resumed, straight = ShardedFaces(root, split), ShardedFaces(written, split)
        for item in range(count):
            assert_samples_identical(resumed[item], straight[item])


def test_shards_of_another_dataset_are_never_taken_for_an_interrupted_write(written, tmp_path):
    root = Path(shutil.copytree(written, tmp_path / "reused"))  # a finished dataset of PARAMETERS
    other = WorldParameters(seed=6, image_size=48, uv_size=48, images_per_identity=3)
    with pytest.raises(KeyboardInterrupt):
        write_dataset(root, other, COUNTS, shard_size=SHARD_SIZE, workers=0, progress=_StopAfter(8))
    write_dataset(root, other, COUNTS, shard_size=SHARD_SIZE, workers=0)
    fresh = tmp_path / "fresh"
    write_dataset(fresh, other, COUNTS, shard_size=SHARD_SIZE, workers=0)
    for split, count in COUNTS.items():
        for item in range(count):
            assert_samples_identical(ShardedFaces(root, split)[item], ShardedFaces(fresh, split)[item])
    with pytest.raises(KeyboardInterrupt):  # and an interrupted write of yet another world
        write_dataset(root, PARAMETERS, COUNTS, shard_size=SHARD_SIZE, workers=0, progress=_StopAfter(8))
    write_dataset(root, PARAMETERS, COUNTS, shard_size=SHARD_SIZE, workers=0)
    for split, count in COUNTS.items():
        for item in range(count):
            assert_samples_identical(ShardedFaces(root, split)[item], ShardedFaces(written, split)[item])


def test_a_data_worker_ignores_stop_signals_and_is_quiet_when_the_main_process_goes(monkeypatch, capsys):
    import signal
    import sys

    handlers = {}
    monkeypatch.setattr(signal, "signal", lambda number, handler: handlers.__setitem__(number, handler))
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # restored after the test
    worker_ignores_stop_signals(0)
    assert handlers == {signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: signal.SIG_IGN}
    assert sys.excepthook is quiet_when_main_is_gone

    for error in (EOFError(), ConnectionResetError("peer gone"), BrokenPipeError()):
        quiet_when_main_is_gone(type(error), error, None)
    assert capsys.readouterr().err == ""
    try:
        raise ValueError("a real error")
    except ValueError as error:
        quiet_when_main_is_gone(ValueError, error, error.__traceback__)
    printed = capsys.readouterr().err
    assert "Traceback" in printed and "ValueError: a real error" in printed
