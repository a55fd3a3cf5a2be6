"""The dry-run plan: what a config would build and roughly what it would cost, offline.

SPIN's cost is the first thing to know before a run: every iteration repeats a generation
pass over all training prompts and a full fine-tune on twice as many pairs. The plan lists
the chain's stages with their sizes, optimizer steps and compute from the config alone: no
model is loaded, no hub data is fetched, nothing is generated or trained. Local data (the
synthetic arithmetic set, a local file or directory) is read to count it exactly; a hub data
set is sized from ``data.n_train`` or reported as unknown.

Token counts are upper bounds from the configured lengths. Compute follows the usual
transformer estimate (2 FLOPs per parameter per token forward, 6 trained), and time divides
it by an assumed sustained throughput (:data:`HARDWARE`); decoding is also bounded below by
reading every weight once per step, the limit that usually binds for generation.
Evaluation sizes are estimates from approximate per-task document counts and lengths.
"""

from spin.planning.formatting import format_plan
from spin.planning.hardware import HARDWARE, Hardware, hardware_profile
from spin.planning.stages import Plan, Stage, build_plan

__all__ = ["HARDWARE", "Hardware", "Plan", "Stage", "build_plan", "format_plan", "hardware_profile"]
