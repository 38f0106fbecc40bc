"""The forward pipeline of each stage as plain modules with typed inputs and outputs (no training code)."""
