"""The audit of the ``paper_zephyr`` preset against the SPIN paper and the authors' code.

One file holds it (``paper_fidelity.yaml`` beside this module): per setting, the paper's value,
the official code's value with file and line, the config keys and values the preset sets, and
whether they agree. Three readers share it, so they cannot drift apart: the test that composes
the preset and compares every key, the dry run that prints what still differs (including any
override that moves a key away from the audited value), and ``docs/paper_fidelity.md``,
rendered from it by ``python -m spin.planning.fidelity --write``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

AUDIT_FILE = Path(__file__).with_name("paper_fidelity.yaml")
DOC_FILE = Path(__file__).resolve().parents[2] / "docs" / "paper_fidelity.md"
STATUSES = ("same", "choice", "different")


@dataclass(frozen=True)
class Row:
    """One audited setting."""

    setting: str
    preset: dict[str, Any]
    paper: str
    official: str
    status: str
    why: str


def load_audit(path: Path = AUDIT_FILE) -> tuple[str, list[Row]]:
    """The audited preset's name and its rows; a malformed row names its setting."""
    data = yaml.safe_load(path.read_text())
    rows = [Row(**row) for row in data["rows"]]
    for row in rows:
        if row.status not in STATUSES:
            raise ValueError(
                f"{path}: {row.setting!r} has status {row.status!r}; expected {STATUSES}"
            )
    return data["preset"], rows


def plain(value: Any) -> Any:
    """A config value as plain Python, for comparing with the audit's YAML values."""
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def departures(cfg: DictConfig, rows: list[Row]) -> list[tuple[Row, str, Any, Any]]:
    """(row, key, audited value, value in ``cfg``) for every key ``cfg`` sets otherwise."""
    found = []
    for row in rows:
        for key, expected in row.preset.items():
            actual = plain(OmegaConf.select(cfg, key, default=None))
            if actual != expected:
                found.append((row, key, expected, actual))
    return found


def difference_lines(cfg: DictConfig) -> list[str]:
    """What a run of ``cfg`` does not do as the paper's authors did: the audit's remaining
    differences, then the keys this config moved away from the audited preset. Empty for
    configs of other experiments."""
    name, rows = load_audit()
    if cfg.name != name:
        return []
    lines = [f"Differences from the paper's setup (docs/paper_fidelity.md, experiment={name}):"]
    lines += [f"  - {row.setting}: {row.why}" for row in rows if row.status == "different"]
    moved = departures(cfg, rows)
    lines += [
        f"  - {row.setting}: {key}={_value(actual)} here, {_value(expected)} in the audited preset"
        for row, key, expected, actual in moved
    ]
    return lines


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _value(value: Any) -> str:
    """A preset value as a command-line override would spell it."""
    if isinstance(value, str):
        return value if value else '""'
    return json.dumps(value)


def _preset_cell(preset: dict[str, Any]) -> str:
    if not preset:
        return "(no setting)"
    return "<br>".join(f"`{key}={_value(value)}`" for key, value in preset.items())


def render(path: Path = AUDIT_FILE) -> str:
    """docs/paper_fidelity.md: the audit as one table, with how to read and check it."""
    name, rows = load_audit(path)
    counts = {status: sum(r.status == status for r in rows) for status in STATUSES}
    head = [
        f"# `experiment={name}` against the SPIN paper and the official code",
        "",
        "Rendered from `spin/planning/paper_fidelity.yaml` by "
        "`python -m spin.planning.fidelity --write`; do not edit by hand.",
        "The paper is arXiv 2401.01335 (ICML 2024); the official code is github.com/uclaml/SPIN "
        "at a12ba80, whose paths and line numbers are cited.",
        f"`python train.py experiment={name} dry_run=true` prints the remaining differences and "
        "any key an override moved; `tests/test_paper_fidelity.py` composes the preset offline "
        "and checks every key below.",
        "",
        f"Status: **same** ({counts['same']}), **choice** ({counts['choice']}: the paper and the "
        "code disagree or the code offers several; the preset picks one and the other is an "
        f"override away), **different** ({counts['different']}: not reproduced, and why).",
        "",
        "| setting | paper | official code | this preset | status | why |",
        "|---|---|---|---|---|---|",
    ]
    body = [
        "| "
        + " | ".join(
            [
                _cell(row.setting),
                _cell(row.paper),
                _cell(row.official),
                _preset_cell(row.preset),
                f"**{row.status}**",
                _cell(row.why),
            ]
        )
        + " |"
        for row in rows
    ]
    return "\n".join(head + body) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {DOC_FILE}")
    args = parser.parse_args()
    text = render()
    if args.write:
        DOC_FILE.write_text(text)
        print(f"Wrote {DOC_FILE}")
    else:
        print(text)


if __name__ == "__main__":
    main()
