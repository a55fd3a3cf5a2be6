"""Gather here what an offline GPU node lacks (``make device-kit``): the wheels of
manifest.py, SmolLM2's tokenizer, and a stamp of what was built from which commit.

The kit goes to ``benchmarks/device/kit/`` (ignored by git): ``wheels/`` for
``pip install --no-index``, ``tokenizer/`` for the speed runs' random-weight models of the
real architectures (the 94 MB SmolLM2 package cannot travel; its tokenizer is 2 MB), and
``kit.json``. It fails when a carried wheel needs a package that neither the image nor the
kit holds, or when the kit and the working tree together pass manifest.SIZE_LIMIT_MIB.

    python benchmarks/device/build_kit.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

# ruff: noqa: E402  (the imports below need the path above)
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]
import manifest

MIB = 1024 * 1024
# The node's interpreter, for evaluating the wheels' environment markers.
NODE = default_environment() | {
    "python_version": manifest.PYTHON,
    "python_full_version": f"{manifest.PYTHON}.3",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "os_name": "posix",
}


def pip(*args: str, env: dict[str, str] | None = None) -> None:
    """This interpreter's pip, quiet, failing with its own message."""
    command = [sys.executable, "-m", "pip", *args, "--quiet", "--disable-pip-version-check"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stdout}{proc.stderr}")


def download(wheels: Path) -> None:
    """The carried packages' wheels for the node's Python and platform, without their
    requirements (which the closure check below accounts for)."""
    platforms = [arg for p in manifest.PLATFORMS for arg in ("--platform", p)]
    pins = [f"{name}=={version}" for name, version in manifest.CARRIED.items()]
    pip(
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        manifest.PYTHON,
        "--implementation",
        "cp",
        *platforms,
        "--dest",
        str(wheels),
        *pins,
    )


def build(wheels: Path) -> None:
    """Wheels of the packages PyPI ships as sdists only, built with this environment's
    setuptools and torch (DeepSpeed's setup imports torch; its ops are left out, to be built
    on the node when first used)."""
    env = {**os.environ, "DS_BUILD_OPS": "0"}
    pins = [f"{name}=={version}" for name, version in manifest.BUILT.items()]
    pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), *pins, env=env)


def save_tokenizer(out: Path) -> None:
    """SmolLM2's tokenizer (the embedded model's, converted from its GGUF once)."""
    import common
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(common.model_dir()).save_pretrained(out)


def requirements_of(wheel: Path) -> list[Requirement]:
    """The Requires-Dist lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(archive.read(name).decode())
    return [Requirement(text) for text in metadata.get_all("Requires-Dist") or []]


def unmet(wheels: Path) -> list[str]:
    """Requirements of the carried wheels (with the extras they ask of each other) that
    neither the image nor the kit meets on the node, one line each; a requirement whose
    marker the node's Python does not match is not needed."""
    found = {canonicalize_name(parse_wheel_filename(w.name)[0]): w for w in wheels.glob("*.whl")}
    asked: dict[str, set[str]] = {name: set() for name in found}
    pending = [(name, "") for name in found]  # (package, extra) whose requirements to check
    problems = set()
    while pending:
        name, extra = pending.pop()
        for req in requirements_of(found[name]):
            if req.marker is not None and not req.marker.evaluate(NODE | {"extra": extra}):
                continue
            dep = canonicalize_name(req.name)
            if dep in found:
                pending += [(dep, e) for e in set(req.extras) - asked[dep]]
                asked[dep] |= set(req.extras)
            elif dep not in manifest.IMAGE:
                problems.add(f"{name} needs {req}: neither the image nor the kit has {dep}")
    return sorted(problems)


def tree_bytes() -> int:
    """What travels besides the kit: tracked files and untracked ones git does not ignore."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=manifest.ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    paths = (manifest.ROOT / name for name in listed if name)
    return sum(p.stat().st_size for p in paths if p.is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def commit() -> str:
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=manifest.ROOT, capture_output=True, text=True
    )
    return head.stdout.strip() or "unknown"


def main() -> None:
    # Built beside the kit, in a folder git ignores too (the tree's size leaves it out).
    staging = manifest.KIT.with_name("kit.partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        kit = staging
        wheels = kit / "wheels"
        wheels.mkdir(parents=True)
        download(wheels)
        build(wheels)
        save_tokenizer(kit / "tokenizer")
        problems = unmet(wheels)
        if problems:
            raise SystemExit("the kit leaves requirements unmet:\n" + "\n".join(problems))
        sizes = {"kit": folder_bytes(kit), "tree": tree_bytes()}
        total = sum(sizes.values())
        stamp = {
            "commit": commit(),
            "python": manifest.PYTHON,
            "wheels": sorted(w.name for w in wheels.glob("*.whl")),
            "bytes": sizes,
        }
        (kit / "kit.json").write_text(json.dumps(stamp, indent=1) + "\n")
        if total > manifest.SIZE_LIMIT_MIB * MIB:
            raise SystemExit(
                f"kit {sizes['kit'] / MIB:.1f} MiB + working tree {sizes['tree'] / MIB:.1f} MiB"
                f" = {total / MIB:.1f} MiB, over the {manifest.SIZE_LIMIT_MIB} MiB limit "
                "(benchmarks/device/manifest.py SIZE_LIMIT_MIB)"
            )
        shutil.rmtree(manifest.KIT, ignore_errors=True)
        kit.rename(manifest.KIT)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(
        f"{manifest.KIT.relative_to(manifest.ROOT)}: {len(stamp['wheels'])} wheels and the "
        f"tokenizer, {sizes['kit'] / MIB:.1f} MiB; with the working tree "
        f"({sizes['tree'] / MIB:.1f} MiB) {total / MIB:.1f} MiB of the "
        f"{manifest.SIZE_LIMIT_MIB} MiB limit"
    )


if __name__ == "__main__":
    main()
