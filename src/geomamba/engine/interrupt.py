"""Signals: ``Interrupted`` (exit status ``128 + signal``), SIGTERM as an exception, quiet workers.

- ``sigterm_raises()``: within the block SIGTERM raises ``Interrupted`` the way Ctrl-C raises
  ``KeyboardInterrupt``, so ``finally`` blocks run (atomic writers delete their temporary file; the target
  is never a partial file). The CLI runs every command inside it.
- ``TrainingInterrupted``: raised by ``geomamba.engine.checkpoint.GracefulInterrupt`` after SIGTERM/SIGINT
  stopped a training run, naming the step and the checkpoint saved.
- ``worker_init``: DataLoader workers ignore SIGINT (a Ctrl-C reaches the whole process group; the main
  process stops the workers itself). They keep SIGTERM, which the DataLoader uses to stop stuck workers.

This module imports no deep-learning library, so the CLI stays quick to start.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from geomamba.data.errors import GeomambaError

__all__ = ["SIGNALS", "Interrupted", "TrainingInterrupted", "sigterm_raises", "worker_init"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(GeomambaError):
    """Stopped by a signal; ``exit_code`` is ``128 + signum``."""

    def __init__(self, signum: int, message: str | None = None) -> None:
        self.signum = int(signum)
        super().__init__(message or f"interrupted by {signal.Signals(signum).name}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class TrainingInterrupted(Interrupted):
    """Training was stopped by a signal; ``checkpoint`` is the resume point written (or None)."""

    def __init__(self, signum: int, *, step: int | None, checkpoint: Path | None) -> None:
        self.step, self.checkpoint = step, checkpoint
        at = f" at step {step}" if step is not None else ""
        if checkpoint is not None:
            saved = f"; saved {checkpoint}; run the same command again to resume"
        else:
            saved = "; nothing new saved (the last checkpoint written is intact)"
        super().__init__(signum, f"interrupted by {signal.Signals(signum).name}{at}{saved}")


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises ``Interrupted`` (like Ctrl-C raises KeyboardInterrupt), so that
    ``finally`` blocks run: atomic writers remove their temporary files, the target stays untouched."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: ignore SIGINT (the main process stops the workers), then Lightning's
    per-worker seeding."""
    from lightning.fabric.utilities.seed import pl_worker_init_function

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pl_worker_init_function(worker_id)
