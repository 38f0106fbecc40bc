"""Data: the synthetic AU-wrinkle face world (the embedded default) and, later, real images."""
