"""What a job shows on the console and what only its log file keeps.

A run's console is for following it: the project's own log lines, progress bars and the
closing table. Third-party libraries warn about things the project does on purpose (lm-eval
about being given a loaded model, about generation settings passed from the config) and the
Trainer prints its values at every logging step; both drowned the project's lines. They are
not silenced: Hydra's job logging (conf/hydra/job_logging/spin.yaml) sends every record to
the job's log file and only the project's to the console, through :class:`ProjectOnly`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable


class ProjectOnly(logging.Filter):
    """Pass the records of the loggers under ``names`` (each a logger and its children), and
    any record of level ERROR or above, whoever logs it: a failure must be seen."""

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__()
        self.names = tuple(names)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        return any(record.name == name or record.name.startswith(name + ".") for name in self.names)


def capture_warnings() -> None:
    """Send Python warnings (``warnings.warn``, e.g. from torch or peft) through logging, as
    records of the ``py.warnings`` logger, so they reach the log file like other libraries'
    warnings instead of printing to stderr. Called by each entry point once Hydra has set up
    the job's logging."""
    logging.captureWarnings(True)
