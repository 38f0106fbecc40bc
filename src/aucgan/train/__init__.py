"""Training: LightningModules for the AU net, coarse stage and detail GAN; their data and callbacks."""

import os


def first_process() -> bool:
    """Whether this is a node's first training process (``LOCAL_RANK`` unset or 0; Lightning sets it for the
    other DDP processes it starts): the one that prints what every process would say alike."""
    return os.environ.get("LOCAL_RANK", "0") in ("", "0")


class TrainingStopped(RuntimeError):
    """Training cannot go on (too many non-finite steps in a row); the message is one line.

    Attributes:
        exit_status: the status ``aucgan train`` exits with (1).
    """

    exit_status = 1


class TrainingInterrupted(TrainingStopped):
    """A signal (Ctrl-C's SIGINT, or SIGTERM) stopped training after a step, with ``last.ckpt`` saved at it
    (:class:`aucgan.train.checkpointing.StopOnSignal`); the message is one line.

    Attributes:
        exit_status: ``128 +`` the signal's number, the shell's status for a process a signal ended.
    """

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.exit_status = 128 + signal_number
