"""What the device kit carries to a GPU node that has no network, and why.

A GPU node is assumed to run this workplace's 'cuda' image (Python 3.12, PyTorch,
transformers, accelerate, peft and about 200 other packages; /work/.library/device/KINDS.md),
reached only by copying the working tree and at most 64 MiB with it. Every dependency in
pyproject.toml is in exactly one of three places here: the image (``IMAGE``), the kit
(``CARRIED`` from PyPI's wheels, ``BUILT`` into wheels from sdists where PyPI has no wheel),
or ``LEFT_OUT`` with the reason. ``tests/test_device_kit.py`` checks pyproject against this
file, so a new dependency cannot be forgotten, and ``build_kit.py`` checks that every carried
wheel's own requirements are met by the image or the kit.
"""

from __future__ import annotations

from pathlib import Path

import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "benchmarks" / "device" / "kit"
# The node's interpreter, for which binary wheels are chosen.
PYTHON = "3.12"
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
)
# The working tree plus the kit travel together, at most 64 MiB: keep a margin.
SIZE_LIMIT_MIB = 48

# The image's packages (image_packages.txt) and, where a session saw them, their versions.
# One whose version is too old for the project is carried as well.
IMAGE_VERSIONS = {
    "accelerate": "1.15.0",
    "huggingface-hub": "1.33.0",
    "numpy": "2.5.2",
    "safetensors": "0.8.0",
    "tokenizers": "0.23.2",
    "torch": "2.11.0",
    "transformers": "5.17.0",
}
IMAGE = frozenset(
    canonicalize_name(line)
    for line in (Path(__file__).parent / "image_packages.txt").read_text().splitlines()
    if line and not line.startswith("#")
)

# Wheels from PyPI (``pip download --only-binary``), at the versions the project is tested
# with here. transformers is in the image, but older than pyproject allows.
CARRIED = {
    "transformers": "5.24.0",
    "datasets": "5.2.0",
    "dill": "0.4.1",
    "multiprocess": "0.70.19",
    "hydra-core": "1.3.8",
    "omegaconf": "2.3.1",
    "hydra-joblib-launcher": "1.2.0",
    "gguf": "0.19.0",
    "lm-eval": "0.4.13",
    "evaluate": "0.4.6",
    "more-itertools": "11.2.1",
    "nltk": "3.10.4",
    "defusedxml": "0.7.1",
    "pytablewriter": "1.2.1",
    "dataproperty": "1.1.1",
    "mbstrdecoder": "1.1.5",
    "chardet": "5.2.0",
    "pathvalidate": "3.3.1",
    "tabledata": "1.3.5",
    "tcolorpy": "0.1.7",
    "typepy": "1.3.5",
    "pytz": "2025.2",
    "trl": "1.16.0",
    "hjson": "3.1.0",
    "pydantic": "2.14.4",
    "pydantic-core": "2.50.5",
    "annotated-types": "0.7.0",
    "typing-inspection": "0.4.5",
}
# PyPI has only an sdist of these: ``pip wheel`` builds them here (pure Python; DeepSpeed
# with its CUDA ops left to its just-in-time build on the node, which has nvcc and ninja).
BUILT = {
    "antlr4-python3-runtime": "4.9.3",
    "rouge-score": "0.1.2",
    "sqlitedict": "2.1.0",
    "word2number": "1.1",
    "deepspeed": "0.19.8",
}
LEFT_OUT = {
    "wandb": "20 MB; imported only with logger=wandb, and the kit's runs use logger=none",
    "wandb-workspaces": "dashboard.py only (it needs wandb and the network)",
    "hydra-submitit-launcher": "the SLURM launcher; the kit runs on one node",
    "ruff": "the linter; nothing the kit runs",
    "bitsandbytes": (
        "QLoRA: its wheel is 41 MB (0.50.2, manylinux_2_24), which with the tree and the rest "
        "of the kit passes the 48 MiB the kit keeps under the 64 MiB transfer"
    ),
    "vllm": (
        "the vLLM backend: hundreds of MB of wheels (and its own pinned torch), far over the "
        "64 MiB transfer"
    ),
}


def project_requirements(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, list[Requirement]]:
    """pyproject.toml's requirements by group: ``dependencies``, then each extra's."""
    project = tomllib.loads(pyproject.read_text())["project"]
    groups = {"dependencies": project["dependencies"], **project["optional-dependencies"]}
    return {group: [Requirement(text) for text in texts] for group, texts in groups.items()}


def coverage_problems(requirements: list[Requirement]) -> list[str]:
    """Why the kit would leave a requirement unmet on the node, one line each (none when
    every requirement is carried at a version it allows, left out with a reason, or in the
    image at a version it allows where that version is known)."""
    problems = []
    for req in requirements:
        name = canonicalize_name(req.name)
        pinned = CARRIED.get(name) or BUILT.get(name)
        if pinned is not None:
            if not req.specifier.contains(Version(pinned), prereleases=True):
                problems.append(f"{req}: benchmarks/device/manifest.py carries {name} {pinned}")
        elif name in LEFT_OUT:
            continue
        elif name not in IMAGE:
            problems.append(
                f"{req}: not in the GPU image; add it to CARRIED (or BUILT, or LEFT_OUT with "
                "the reason) in benchmarks/device/manifest.py"
            )
        elif name in IMAGE_VERSIONS and not req.specifier.contains(IMAGE_VERSIONS[name]):
            problems.append(
                f"{req}: the GPU image has {name} {IMAGE_VERSIONS[name]}; carry a newer one "
                "in benchmarks/device/manifest.py"
            )
    return problems
