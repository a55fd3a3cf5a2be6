"""Run a named sweep preset from sweeps/ and write its report, in one command.

    python sweep.py                      # list the presets
    python sweep.py smol_arith           # run it, then report into <sweep dir>/report
    python sweep.py beta experiment=tiny # any train.py override applies to every job

A preset is a Hydra config holding ``hydra.sweeper.params``; this runs
``train.py -m --config-dir sweeps --config-name <preset>`` with a fixed sweep directory, so
the report knows where the jobs wrote. A comparison that is not one grid (baselines once,
variants by iteration, extra seeds for some) is a preset of ``parts``: a list of grids, each
a mapping of train.py keys to comma-separated values, run one after another into the same
directory. Overrides given here apply to every job and replace a part's values for the same
key. Re-running a finished preset builds nothing new (every stage is a shared artifact) and
rewrites the report.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

from spin.entry import new_folder, script
from spin.errors import ConfigError

ROOT = Path(__file__).resolve().parent
SWEEPS = ROOT / "sweeps"


def presets() -> dict[str, str]:
    """Preset name -> its first comment line."""
    out = {}
    for path in sorted(SWEEPS.glob("*.yaml")):
        first = path.read_text().splitlines()[0]
        out[path.stem] = first.lstrip("# ").strip()
    return out


def sweep_dir(name: str, overrides: list[str], tag: str | None) -> Path:
    """``<paths.root>/sweeps/<preset>/<tag>``, or without a tag a new folder named by the
    start time that no other sweep can claim; honours a ``paths.root=`` override. A tag
    names a folder on purpose: running the preset again under it reuses its jobs' folders
    (each locked while its job runs) and rewrites the report."""
    root = next((o.split("=", 1)[1] for o in overrides if o.startswith("paths.root=")), None)
    if root is None:
        root = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["paths"]["root"]
    parent = Path(root) / "sweeps" / name
    if tag is not None:
        return parent / tag
    return Path(new_folder(root, parent))


def is_dry_run(overrides: list[str]) -> bool:
    """Whether the overrides ask train.py only to plan (``dry_run=true``): no job writes a
    report then, so there is none to collect."""
    return any(o.replace(" ", "").lower() in ("dry_run=true", "dry_run=1") for o in overrides)


def preset_parts(name: str) -> list[dict[str, str]] | None:
    """The grids of a preset of ``parts``, or None for a Hydra sweep config."""
    preset = yaml.safe_load((SWEEPS / f"{name}.yaml").read_text())
    if "parts" not in preset:
        return None
    return [{key: str(value) for key, value in part.items()} for part in preset["parts"]]


def varied_keys(parts: list[dict[str, str]]) -> set[str]:
    """Keys whose values differ between the parts (a key a part leaves out counts as a
    value): what the preset as a whole varies."""
    keys = {key for part in parts for key in part}
    return {key for key in keys if len({part.get(key) for part in parts}) > 1}


def part_overrides(part: dict[str, str], varied: set[str], overrides: list[str]) -> list[str]:
    """A part's grid as train.py overrides, less the keys the command line sets. A single
    value of a key the preset varies is written ``choice(value)``, a sweep of one value, so
    each job records it among the keys its sweep varied (``seed`` of a seeds part)."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    return [
        f"{key}=choice({values})" if key in varied and "," not in values else f"{key}={values}"
        for key, values in part.items()
        if key not in given
    ]


def run_train(arguments: list[str]) -> int:
    command = [sys.executable, str(ROOT / "train.py"), "-m", *arguments]
    print("Running:", " ".join(command[1:]), flush=True)
    return subprocess.run(command, cwd=ROOT).returncode


def run_preset(name: str, overrides: list[str], directory: Path) -> int:
    sweep_dir = f"hydra.sweep.dir={directory}"
    parts = preset_parts(name)
    if parts is None:
        return run_train(
            ["--config-dir", str(SWEEPS), "--config-name", name, sweep_dir, *overrides]
        )
    varied = varied_keys(parts)
    for part in parts:
        code = run_train([*part_overrides(part, varied, overrides), sweep_dir, *overrides])
        if code != 0:
            return code
    return 0


@script("the sweep", "Run the same command again to resume: finished stages are reused")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("preset", nargs="?", help="a file name in sweeps/ without .yaml")
    parser.add_argument("overrides", nargs="*", help="train.py overrides for every job")
    parser.add_argument("--tag", help="sweep directory name (default: the start time)")
    parser.add_argument("--no-report", action="store_true", help="run the jobs only")
    parser.add_argument("--wandb", action="store_true", help="also log the report to W&B")
    # Options may come after the overrides: python sweep.py beta iter=0 --tag t
    args = parser.parse_intermixed_args(argv)
    known = presets()
    if args.preset is None:
        for name, about in known.items():
            print(f"{name:<22} {about}")
        return 0
    if args.preset not in known:
        raise ConfigError(f"unknown sweep preset {args.preset!r}; expected one of {sorted(known)}")
    directory = sweep_dir(args.preset, args.overrides, args.tag)
    started = time.perf_counter()
    code = run_preset(args.preset, args.overrides, directory)
    print(f"Sweep {args.preset}: {time.perf_counter() - started:.0f} s, jobs in {directory}")
    if code != 0 or args.no_report or is_dry_run(args.overrides):
        return code
    from spin.reporting import collect_rows, write_job_panels, write_report
    from spin.reporting.exact_world import write_exact_world

    out = directory / "report"
    written = write_report(collect_rows([directory]), out, wandb=args.wandb)
    written += write_job_panels([directory], out)
    written += write_exact_world([directory], out)
    print("Report:", *map(str, written), sep="\n  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
