"""Which errors are a user's to fix, spin's and evaluation's together.

The error types themselves sit at the bottom of each package (spin/errors.py,
evaluation/errors.py) and import nothing; this module only groups them, so the entry shell
(spin/entry.py) and anything else that tells a user's fault from a bug read one list.
"""

from __future__ import annotations

from evaluation.errors import EvalConfigError, ResultsError
from spin.errors import (
    ArtifactError,
    CheckpointError,
    ConfigError,
    DataError,
    DiskFullError,
    NonFiniteLossError,
    ReportError,
    TrackingError,
)

# Settings a user changes on the command line.
CONFIG_FAULTS: tuple[type[Exception], ...] = (ConfigError, EvalConfigError)
# Faults a user fixes by changing an input, a setting or the disk.
USER_FAULTS: tuple[type[Exception], ...] = (
    DataError,
    ArtifactError,
    CheckpointError,
    DiskFullError,
    NonFiniteLossError,
    ResultsError,
    ReportError,
    TrackingError,
)
FAULTS = CONFIG_FAULTS + USER_FAULTS
