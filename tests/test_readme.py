"""README is the front door: short enough to read first, its links and the guides' links lead
to files that exist, and the default run's table in it is what `python train.py` prints today."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 200
TABLE_START = "<!-- default-run-table -->"
TABLE_END = "<!-- /default-run-table -->"
TABLE_HEAD = "Scores (eval=embedded):"

FENCE = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
REMOTE = ("http://", "https://", "mailto:")


def prose(text: str) -> str:
    """The Markdown without code, where a bracket followed by a parenthesis is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors a Markdown page's headings define."""
    headings = re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.MULTILINE)
    return {slug(h) for h in headings}


def local_links(page: Path) -> list[str]:
    """The targets of the page's links that point into the repository."""
    return [t for t in LINK.findall(prose(page.read_text())) if not t.startswith(REMOTE)]


def broken(page: Path, target: str) -> str | None:
    """Why a link from ``page`` to ``target`` leads nowhere, or None when it resolves."""
    path, _, anchor = target.partition("#")
    file = (page.parent / path).resolve() if path else page
    if not file.exists():
        return f"{file.relative_to(ROOT)} does not exist"
    if anchor and file.suffix == ".md" and anchor not in anchors(file):
        return f"{file.relative_to(ROOT)} has no heading with anchor #{anchor}"
    return None


def table_lines(lines: list[str]) -> list[str]:
    """The score table as train.py prints it: from its heading through its last row, the
    average (whatever a log line printed after it)."""
    start = lines.index(TABLE_HEAD)
    rows = range(start, len(lines))
    end = next((i + 1 for i in rows if lines[i].startswith("average")), len(lines))
    return [line.rstrip() for line in lines[start:end]]


def readme_table() -> list[str]:
    """The default run's table as README quotes it, between its two markers."""
    text = README.read_text()
    block = text.split(TABLE_START, 1)[1].split(TABLE_END, 1)[0]
    return table_lines([line for line in block.splitlines() if not line.startswith("```")])


def test_readme_fits_in_200_lines():
    n = len(README.read_text().splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move detail into a guide in docs/"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_local_links_resolve(page: Path):
    problems = [f"[..]({t}): {why}" for t in local_links(page) if (why := broken(page, t))]
    assert not problems, f"{page.relative_to(ROOT)}:\n" + "\n".join(problems)


def test_readme_quotes_a_default_run_table():
    table = readme_table()
    assert table[0] == TABLE_HEAD and len(table) > 2, table


@pytest.mark.slow
def test_default_run_prints_readme_table(tmp_path: Path):
    """A fresh default run (an empty output root: the model is converted again and every
    stage is built) prints the table README shows. Scores are exact on the CPU and thread
    count README's table was measured with; elsewhere rounding may move a last digit."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_SILENT": "true"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"paths.root={tmp_path}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,  # about 10 min on 2 idle cores, 16 min under load
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert table_lines(proc.stdout.splitlines()) == readme_table(), (
        "README.md's default-run table is stale: paste the block train.py printed\n"
        + "\n".join(table_lines(proc.stdout.splitlines()))
    )
