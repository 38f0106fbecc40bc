"""Networks of both stages: modules only, no training logic; constructors take plain arguments."""
