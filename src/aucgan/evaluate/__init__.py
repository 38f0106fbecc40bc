"""Evaluation: metrics against the synthetic ground truth, benchmarks and the HTML report."""
