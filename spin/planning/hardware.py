"""Devices a plan's time is estimated for, and the paper's reported costs to compare with."""

from __future__ import annotations

from dataclasses import dataclass, replace

HOUR = 3600.0
GiB = 2**30


BYTES_PER_PARAM = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Hardware:
    """One device type and the share of its peak a run is assumed to sustain."""

    name: str
    description: str
    peak_flops: float  # per device, dense matrix multiplies at the training precision
    bandwidth: float  # bytes per second of memory per device
    utilisation: float  # fraction of peak_flops sustained over a stage
    memory: float  # bytes of memory per device (the accelerator's; the host's for the CPU)

    @property
    def sustained_flops(self) -> float:
        return self.peak_flops * self.utilisation


HARDWARE = {
    "a100": Hardware("a100", "NVIDIA A100 80GB SXM, bf16 dense", 312e12, 2.0e12, 0.4, 80 * GiB),
    "h100": Hardware("h100", "NVIDIA H100 SXM, bf16 dense", 989e12, 3.35e12, 0.4, 80 * GiB),
    # torch.mm fp32 peak measured on the project's 2-core reference machine
    # (docs/performance.md); 2 GB/s is the order of the weight-read rate its decoding
    # reached in the default run measured on b0c45f3 (256 steps over 540 MB of weights in 96 s);
    # 24 GiB of host memory.
    "cpu": Hardware(
        "cpu", "2 CPU cores, fp32 (measured matmul peak)", 8.0e10, 2.0e9, 0.2, 24 * GiB
    ),
}


def hardware_profile(name: str, utilisation: float | None = None) -> Hardware:
    """A profile of :data:`HARDWARE`, optionally at another assumed utilisation."""
    if name not in HARDWARE:
        raise ValueError(f"hardware {name!r} is not known; expected one of {sorted(HARDWARE)}")
    if utilisation is None:
        return HARDWARE[name]
    if not 0 < utilisation <= 1:
        raise ValueError(f"utilisation={utilisation} must be a fraction in (0, 1]")
    return replace(HARDWARE[name], utilisation=utilisation)


# The paper's reported cost on 8 x A100 80GB (PAPER.md, "Cost"): its training recomputes the
# reference model every step, which this project does once in the reference stage.
PAPER_HARDWARE = "8 x A100 80GB"


PAPER_MODEL = "zephyr-7b-sft-full"


PAPER_GENERATION_S = 1.45 * HOUR


PAPER_TRAIN_S = {0: 4.32 * HOUR, 1: 8.64 * HOUR, 2: 8.64 * HOUR, 3: 8.64 * HOUR}
