"""Tests of sharded batch jobs (:mod:`aucgan.sharding`, ``aucgan reconstruct --shard``): each input belongs to
exactly one shard, shards share one output folder without touching each other's faces, a killed shard
resumes alone, and the shard comes from SLURM's or torchrun's environment when ``--shard`` is not given."""

from __future__ import annotations

import collections
import contextlib
import io
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from aucgan import reconstruct
from aucgan.cli import main
from aucgan.reconstruct import FACE_FILES, is_finished, reconstruct_inputs
from aucgan.sharding import (
    SLURM_VARIABLES,
    TORCHRUN_VARIABLES,
    Shard,
    ShardError,
    parse_shard,
    shard_from_environment,
    shard_of,
)

PHOTO = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


def cli(*argv: object) -> tuple[int, list[str]]:
    """``aucgan ARGV`` in-process: its exit status and its output lines (progress-bar redraws left out)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(arg) for arg in argv])
    text = out.getvalue() + err.getvalue()
    return status, [line for line in text.split("\n") if line.strip() and "\r" not in line]


@pytest.fixture(autouse=True)
def no_scheduler(monkeypatch: pytest.MonkeyPatch) -> None:
    """Run every test as outside any job array or torchrun (the machine running the tests might be in one)."""
    for name in (*SLURM_VARIABLES, *TORCHRUN_VARIABLES, "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)


# Which shard owns an input --------------------------------------------------------------------------------


def test_shard_of_is_a_fixed_function_of_the_name() -> None:
    # Pinned: a change of the hash would move finished faces to other shards in the middle of a job.
    names = ["face00", "face01", "photo", "interview_f00012"]
    assert [shard_of(name, 3) for name in names] == [2, 2, 1, 2]
    assert [shard_of(name, 10) for name in names] == [5, 4, 1, 0]
    assert all(shard_of(name, 1) == 0 for name in names)
    with pytest.raises(ValueError, match="count"):
        shard_of("photo", 0)


def test_shards_split_many_inputs_evenly_and_each_input_once() -> None:
    names = [f"IMG_{i:05d}" for i in range(3000)]
    shards = [Shard(index, 4) for index in range(4)]
    owners = [[shard for shard in shards if shard.owns(name)] for name in names]
    assert all(len(found) == 1 for found in owners)
    sizes = collections.Counter(found[0].index for found in owners)
    assert all(abs(sizes[index] - 750) < 75 for index in range(4)), sizes


@pytest.mark.parametrize(
    ("text", "shard"), [("1/1", Shard(0, 1)), ("1/3", Shard(0, 3)), ("3/3", Shard(2, 3))]
)
def test_parse_shard_counts_from_1(text: str, shard: Shard) -> None:
    assert parse_shard(text) == shard
    assert str(shard) == text


@pytest.mark.parametrize("text", ["0/3", "4/3", "2", "a/b", "1/0", "-1/3", "1/3/5", ""])
def test_a_bad_shard_is_one_line_with_an_example(text: str) -> None:
    with pytest.raises(ShardError) as caught:
        parse_shard(text)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("--shard ") and "e.g. --shard 1/" in message


# The shard a scheduler gives -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "shard"),
    [
        (
            {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "10", "SLURM_ARRAY_TASK_MIN": "0"},
            Shard(0, 10),
        ),
        (
            {"SLURM_ARRAY_TASK_ID": "10", "SLURM_ARRAY_TASK_COUNT": "10", "SLURM_ARRAY_TASK_MIN": "1"},
            Shard(9, 10),
        ),
        (
            {
                "SLURM_ARRAY_TASK_ID": "4",
                "SLURM_ARRAY_TASK_COUNT": "5",
                "SLURM_ARRAY_TASK_MIN": "0",
                "SLURM_ARRAY_TASK_STEP": "2",
            },
            Shard(2, 5),
        ),
        ({"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "2", "SLURM_ARRAY_TASK_MAX": "5"}, Shard(1, 4)),
        ({"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}, Shard(1, 4)),
        (
            {
                "SLURM_ARRAY_TASK_ID": "2",
                "SLURM_ARRAY_TASK_COUNT": "3",
                "SLURM_ARRAY_TASK_MIN": "0",
                "RANK": "1",
                "WORLD_SIZE": "2",
            },
            Shard(5, 6),
        ),
    ],
    ids=[
        "array 0-9",
        "array 1-10",
        "array 0-8:2",
        "old SLURM without a count",
        "torchrun",
        "torchrun in array",
    ],
)
def test_shard_from_environment(environ: dict[str, str], shard: Shard) -> None:
    found = shard_from_environment(environ)
    assert found is not None and found[0] == shard
    reason = found[1]
    assert ("SLURM_ARRAY_TASK_ID" in reason) == ("SLURM_ARRAY_TASK_ID" in environ)
    assert ("RANK=" in reason) == ("RANK" in environ)


@pytest.mark.parametrize(
    "environ",
    [{}, {"RANK": "0", "WORLD_SIZE": "1"}, {"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "1"}],
    ids=["nothing", "one torchrun process", "one array task"],
)
def test_an_environment_that_splits_nothing_gives_no_shard(environ: dict[str, str]) -> None:
    assert shard_from_environment(environ) is None


@pytest.mark.parametrize(
    ("environ", "pattern"),
    [
        (
            {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1"},
            "--array=1,5,7",
        ),
        (
            {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "3"},
            "SLURM_ARRAY_TASK_ID='x' is not a whole",
        ),
        ({"RANK": "4", "WORLD_SIZE": "4"}, "RANK=4 is not below WORLD_SIZE=4"),
    ],
)
def test_an_inconsistent_environment_is_one_line(environ: dict[str, str], pattern: str) -> None:
    with pytest.raises(ShardError, match="give --shard K/N") as caught:
        shard_from_environment(environ)
    assert pattern in str(caught.value) and "\n" not in str(caught.value)


# Shards of one job -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def thirty_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 small face crops of the real photo, each a little shifted (64 px: the tiny config's input)."""
    if not PHOTO.is_file():
        pytest.skip(f"matplotlib ships no {PHOTO.name} here")
    folder = tmp_path_factory.mktemp("thirty") / "photos"
    folder.mkdir()
    with Image.open(PHOTO) as opened:
        photo = opened.convert("RGB")
    for i in range(30):
        photo.crop((110 + 2 * i, 130 + i, 410 + 2 * i, 430 + i)).resize((64, 64)).save(
            folder / f"face{i:02d}.png"
        )
    return folder


def _stamps(folders: list[Path]) -> dict[Path, int]:
    return {path: path.stat().st_mtime_ns for folder in folders for path in folder.iterdir()}


def test_three_shards_write_every_face_once_and_a_killed_shard_redoes_only_its_own(
    thirty_faces: Path, random_reconstructor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The AU bar chart of vis.png is drawn with matplotlib (a third of the time here) and is not under test.
    monkeypatch.setattr(reconstruct, "au_chart", lambda scores: np.full((256, 256, 3), 255, np.uint8))
    out = tmp_path / "faces"
    reports = [
        reconstruct_inputs(random_reconstructor, thirty_faces, out, crop=False, shard=Shard(k, 3))
        for k in range(3)
    ]
    written = [sorted(path.name for path in report.written) for report in reports]
    names = [f"face{i:02d}" for i in range(30)]
    assert sorted(name for shard in written for name in shard) == names  # each face by exactly one shard
    assert all(written) and all(not report.failed and not report.skipped for report in reports)
    assert [report.inputs for report in reports] == [len(shard) for shard in written]
    assert all(report.inputs + report.others == 30 for report in reports)
    assert written == [[name for name in names if shard_of(name, 3) == k] for k in range(3)]
    assert sorted(path.name for path in out.iterdir()) == names  # the layout of an unsharded run
    assert all(is_finished(out / name) for name in names)

    # Shard 2 was killed: one face half written (codes.npz, the last file, missing), one never started.
    half, gone = written[1][0], written[1][-1]
    (out / half / "codes.npz").unlink()
    for path in (out / gone).iterdir():
        path.unlink()
    (out / gone).rmdir()
    others = [out / name for name in names if name not in (half, gone)]
    before = _stamps(others)
    again = reconstruct_inputs(random_reconstructor, thirty_faces, out, crop=False, shard=Shard(1, 3))
    assert sorted(path.name for path in again.written) == sorted([half, gone])
    assert sorted(again.skipped) == sorted(set(written[1]) - {half, gone})
    assert _stamps(others) == before  # no other face folder, of this shard or another, was touched
    assert all(is_finished(out / name) for name in names)
    assert {path.name for path in (out / half).iterdir()} == set(FACE_FILES)


def test_the_cli_takes_its_shard_from_a_slurm_array_and_says_so(
    thirty_faces: Path,
    random_weights: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="aucgan")
    inputs = tmp_path / "photos"
    inputs.mkdir()
    for name in ("face00.png", "face01.png", "face02.png", "face03.png"):
        (inputs / name).write_bytes((thirty_faces / name).read_bytes())
    # With SLURM's --array=1-10, task 6 is shard 6/10: of these four only face00 hashes to it.
    assert [shard_of(f"face{i:02d}", 10) for i in range(4)] == [5, 4, 4, 9]
    for name, value in {
        "SLURM_ARRAY_TASK_ID": "6",
        "SLURM_ARRAY_TASK_COUNT": "10",
        "SLURM_ARRAY_TASK_MIN": "1",
    }.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "faces"
    status, lines = cli("reconstruct", inputs, "--out", out, "--weights", random_weights, "--no-crop")
    assert status == 0, lines
    assert (
        "shard 6/10 (SLURM_ARRAY_TASK_ID=6 of 10 array tasks from SLURM_ARRAY_TASK_MIN=1; --shard K/N "
        "overrides): 1 of 4 inputs"
    ) in caplog.messages
    assert [path.name for path in out.iterdir()] == ["face00"]

    status, lines = cli(
        "reconstruct", inputs, "--out", out, "--weights", random_weights, "--no-crop", "--shard", "10/10"
    )
    assert status == 0, lines
    assert "shard 10/10 (--shard): 1 of 4 inputs" in caplog.messages
    assert sorted(path.name for path in out.iterdir()) == ["face00", "face03"]


@pytest.mark.parametrize(
    ("argv", "environ", "pattern"),
    [
        (["--shard", "0/3"], {}, "--shard 0/3: K must be from 1 to N"),
        (["--shard", "two"], {}, "--shard 'two' is not K/N"),
        ([], {"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is not below WORLD_SIZE=2"),
    ],
)
def test_a_bad_shard_stops_the_cli_in_one_line(
    thirty_faces: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv, environ, pattern
) -> None:
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    status, lines = cli("reconstruct", thirty_faces, "--out", tmp_path / "out", *argv)
    assert status == 2 and len(lines) == 1, lines
    assert lines[0].startswith("aucgan reconstruct: ") and pattern in lines[0]
    assert not (tmp_path / "out").exists()


def test_torchrun_gives_each_process_the_gpu_of_its_local_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    from aucgan.cli import _take_shard, build_parser

    for name, value in {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args(["reconstruct", "photos", "--out", "faces", "--device", "cuda"])
    shard, reason = _take_shard(args)
    assert shard == Shard(5, 8) and args.device == "cuda:1"
    assert reason == "torchrun's RANK=5 of WORLD_SIZE=8; device cuda:1 from LOCAL_RANK; --shard K/N overrides"
    args = build_parser().parse_args(["reconstruct", "photos", "--out", "faces", "--device", "cuda:0"])
    assert _take_shard(args)[0] == Shard(5, 8) and args.device == "cuda:0"  # a device given in full stays
