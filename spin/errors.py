"""Every error type of spin, at the bottom of the import graph.

Each error names what a user can fix (a config key, a data row, a file on disk), so entry
points and jobs catch them by type and print the message instead of a traceback. Keeping them
in one module that imports nothing of ours lets any module raise them without importing the
module that happens to check the condition, which is what kept imports running in circles.
"""

from __future__ import annotations

from pathlib import Path


class ConfigError(ValueError):
    """A config value is not allowed; the message names the key and the allowed values."""


class DataError(ValueError):
    """A data row or source is unusable; the message names file, row, field and expectation."""


class ArtifactError(RuntimeError):
    """An artifact directory on disk that cannot be used as it is."""


class DiskFullError(OSError):
    """The disk filled up during a write; the message names the file being written."""


class CheckpointError(RuntimeError):
    """A weights file that cannot be read; the message names it and says how to recover.

    ``artifact`` is the artifact directory holding the file, if it is in one: deleting it
    makes the next run rebuild the weights, which is the way out the message offers.
    """

    def __init__(self, path: Path, err: Exception, artifact: Path | None) -> None:
        remedy = (
            f"delete the artifact {artifact} and rerun to rebuild it"
            if artifact is not None
            else "replace it with a complete copy"
        )
        super().__init__(
            f"{path}: cannot read the model weights ({err}); the file is damaged or "
            f"incomplete: {remedy}"
        )


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite; the message names the step and the batch."""


class ReportError(ValueError):
    """A report.json that cannot be read as the job report contract describes."""


class Mismatch(ValueError):
    """The two models' documents cannot be paired (different counts or leaf tasks)."""


class TrackingError(RuntimeError):
    """W&B cannot be used as the settings ask (no credentials, no network, a server that
    refuses): the message says what failed and how to go on offline."""
