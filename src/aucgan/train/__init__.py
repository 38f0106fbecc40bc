"""Training: LightningModules for the AU net, coarse stage and detail GAN; their data and callbacks."""


class TrainingStopped(RuntimeError):
    """Training cannot go on (too many non-finite steps in a row); the message is one line."""
