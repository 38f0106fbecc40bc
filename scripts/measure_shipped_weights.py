"""Measure the shipped weights and write their scores beside them.

    python scripts/measure_shipped_weights.py [--n 32] [--edit-faces 8] [--weights FILE] [--out FILE]

evaluates ``src/aucgan/pretrained/synthetic.safetensors`` (or ``--weights``) on held-out synthetic faces with
the metric functions of ``aucgan evaluate`` and writes ``src/aucgan/pretrained/synthetic.metrics.json``
(or ``--out``): the command, the date, the weights' SHA-256, the faces and the headline scores. Rerun it
whenever the shipped weights change; ``aucgan doctor`` prints the scores and says when they are stale.
"""

from __future__ import annotations

import sys

from aucgan.evaluate.shipped import main

if __name__ == "__main__":
    sys.exit(main())
