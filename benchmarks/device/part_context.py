"""What a part of the device check is given and may raise; a module of its own so that
check.py run as a script and the part modules share one ``Skip`` class. It imports
nothing heavy."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


class Skip(Exception):
    """A part that cannot run on this machine; the message says why."""


@dataclass(frozen=True)
class Run:
    """The report folder, whether the part runs at toy sizes on the CPU (``check.sh
    --cpu``), and the part's name. A part's own work (models, runs) goes to ``work``, in
    check.sh's scratch folder ($CHECK_SCRATCH), not among the reports."""

    out: Path
    toy: bool
    part: str

    @property
    def work(self) -> Path:
        scratch = os.environ.get("CHECK_SCRATCH") or os.path.join(tempfile.gettempdir(), "device")
        folder = Path(scratch) / self.part
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def device(self) -> torch.device:
        import torch  # here: listing and skipping parts must not pay for importing it

        return torch.device("cpu" if self.toy else "cuda")


def verdict(failures: dict[str, bool]) -> dict:
    """A part's ``ok`` and ``why`` from its checks, each named by what it means when it
    fails: ``why`` lists those that did."""
    failed = [what for what, bad in failures.items() if bad]
    return {"ok": not failed, "why": "; ".join(failed) or None}
