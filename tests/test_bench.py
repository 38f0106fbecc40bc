"""Tests of ``aucgan bench`` (:mod:`aucgan.bench`): the reference design, the Markdown section writer, and
a real (tiny) run through the command line that measures both designs; nothing asserts a time."""

from __future__ import annotations

import json

import pytest
import torch

from aucgan.bench import REFERENCE_MODEL, STAGES, design_config, matmul_peak, write_results_section
from aucgan.cli import main
from aucgan.config import Config, load_config, preset_path

TINY = preset_path("synthetic-tiny")


def test_reference_design_swaps_only_the_three_networks():
    cfg = load_config(Config, TINY)
    reference = design_config(cfg, "reference")
    for key, value in REFERENCE_MODEL.items():
        assert getattr(reference.model, key) == value
    assert design_config(cfg, "ours") is cfg
    others = {k: v for k, v in vars(cfg.model).items() if k not in REFERENCE_MODEL}
    assert {k: v for k, v in vars(reference.model).items() if k not in REFERENCE_MODEL} == others
    with pytest.raises(ValueError, match="unknown design 'deca'"):
        design_config(cfg, "deca")


def test_matmul_peak_is_a_positive_rate():
    assert matmul_peak(torch.device("cpu"), size=128, repeats=2) > 0


def test_results_section_is_replaced_between_its_markers(tmp_path):
    path = tmp_path / "RESULTS.md"
    write_results_section(path, "bench", "first")
    write_results_section(path, "ablation", "table")
    write_results_section(path, "bench", "second\nbody")
    text = path.read_text()
    assert text.startswith("# Results\n")
    assert "<!-- bench -->\nsecond\nbody\n<!-- /bench -->" in text and "first" not in text
    assert "<!-- ablation -->\ntable\n<!-- /ablation -->" in text


def test_bench_measures_both_designs(tmp_path, capsys):
    out, results = tmp_path / "bench.json", tmp_path / "RESULTS.md"
    argv = ["bench", "--config", str(TINY), "--batches", "1", "2", "--repeats", "1", "--train-repeats", "1",
            "--out", str(out), "--results", str(results)]  # fmt: skip
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["matmul_peak_flops"] > 0
    rows = {(row["design"], row["batch"]): row for row in data["inference"]}
    assert set(rows) == {(d, b) for d in ("ours", "reference") for b in (1, 2)}
    for row in rows.values():
        assert set(row["seconds"]) == set(STAGES) and all(t > 0 for t in row["seconds"].values())
        assert row["flops_per_image"] > 0 and row["roofline_fraction"] > 0
        assert row["au_passes_per_image"] == 1
        assert row["peak_rss_mb"] > 100
        assert row["profile"] and sum(op["share"] for op in row["profile"]) <= 1.0 + 1e-9
    assert rows["ours", 1]["parameters"] != rows["reference", 1]["parameters"]
    assert {row["design"] for row in data["training"]} == {"ours", "reference"}
    assert all(row["seconds"] > 0 and row["batch"] == 4 for row in data["training"])
    text = results.read_text()
    assert "<!-- bench -->" in text and "| ours | 2 |" in text and "| reference | 1 |" in text
    assert "Where the time goes (ours, batch 2" in text
    assert "speed-up vs reference" in capsys.readouterr().out
