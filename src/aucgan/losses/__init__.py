"""Losses of the detail stage, one concept per module, each a pure function with its formula documented."""
