"""Loaders of published weights (DECA, EMOCA, OpenGraphAU): safe to read, strict about keys."""
