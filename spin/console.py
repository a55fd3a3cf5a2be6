"""What a job shows on the console and what only its log file keeps.

A run's console is for following it: the project's own log lines, progress bars and the
closing table. Third-party libraries warn about things the project does on purpose (lm-eval
about being given a loaded model, about generation settings passed from the config) and the
Trainer prints its values at every logging step; both drowned the project's lines. They are
not silenced: Hydra's job logging (conf/hydra/job_logging/spin.yaml) sends every record to
the job's log file and only the project's to the console, through :class:`ProjectOnly`.

Progress bars are not log records: they write to the terminal directly. The libraries' own
bars, for steps the project's bars and log lines already cover (transformers writing a
checkpoint's shards and loading weights, datasets preparing and saving its files, lm-eval
building each task's requests), are turned off once per process by
:func:`quiet_third_party`; the project's bars (generation, reference pass, training) and
lm-eval's labelled bars over the requests it scores stay.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

# Read by huggingface_hub (and so transformers) and by datasets when they are imported: set
# in this process's environment, they turn the bars off in every process it starts too
# (data loader and vLLM workers, a launcher's or a sweep's jobs). A value the user set is kept.
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


class ProjectOnly(logging.Filter):
    """Pass the records of the loggers under ``names`` (each a logger and its children), and
    any record of level ERROR or above, whoever logs it: a failure must be seen."""

    def __init__(self, names: Iterable[str]) -> None:
        super().__init__()
        self.names = tuple(names)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "console", True) is False:
            return False  # said on the console in its own words (spin/entry.py)
        if record.levelno >= logging.ERROR:
            return True
        return any(record.name == name or record.name.startswith(name + ".") for name in self.names)


def capture_warnings() -> None:
    """Send Python warnings (``warnings.warn``, e.g. from torch or peft) through logging, as
    records of the ``py.warnings`` logger, so they reach the log file like other libraries'
    warnings instead of printing to stderr, and turn the third-party progress bars off
    (:func:`quiet_third_party`). Called by each entry point once Hydra has set up the job's
    logging."""
    logging.captureWarnings(True)
    quiet_third_party()


_quiet = False


def quiet_third_party() -> None:
    """Turn off, in this process and the processes it starts, the progress bars of
    transformers ("Writing model shards" at every checkpoint, "Loading weights"),
    huggingface_hub (downloads), datasets ("Generating test split", "Creating json from
    Arrow format", "Saving the dataset") and lm-eval's unlabelled bar over each task's
    documents. Idempotent; after the first call it does nothing."""
    global _quiet
    if _quiet:
        return
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    # The libraries are imported by every entry point already (spin.entry imports lm-eval
    # through evaluation), so these imports cost nothing there.
    import datasets
    from huggingface_hub import utils as hub_utils
    from lm_eval.api import task
    from transformers.utils import logging as transformers_logging

    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] != "0":
        hub_utils.disable_progress_bars()
        transformers_logging.disable_progress_bar()  # its own switch, besides the hub's
    if os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] != "0":
        datasets.disable_progress_bars()
    # lm-eval's Task.build_all_requests shows a bar with no description ("0/4") per task
    # and no setting turns it off; its module's tqdm is the only one that bar goes through.
    if not getattr(task.tqdm, "labelled_only", False):
        task.tqdm = labelled_only(task.tqdm)
    _quiet = True


def labelled_only(bar: Callable[..., Any]) -> Callable[..., Any]:
    """``bar`` (a tqdm class) that shows only the bars given a description: one without
    says nothing of what it counts."""

    def make(*args: Any, **kwargs: Any) -> Any:
        desc = kwargs.get("desc", args[1] if len(args) > 1 else None)
        if not desc:
            kwargs["disable"] = True
        return bar(*args, **kwargs)

    make.labelled_only = True  # how a second call recognises it
    return make
