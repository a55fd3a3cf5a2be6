#!/usr/bin/env bash
# The GPU path checked in one command, offline: benchmarks/device/check.sh [--cpu] OUT_DIR
#
# Installs the kit (benchmarks/device/kit/, from `make device-kit`) where there is one,
# then runs every part of benchmarks/device/check.py in its own process under its own time
# limit, all within CHECK_BUDGET_S from its start (default 450 s, the install included:
# under 8 minutes with the report), and
# writes three files to OUT_DIR: device_report.json, device_report.md and details.tar.gz
# (each part's result and log). The parts' own work (models, runs, the installed kit) goes
# to a temporary folder, removed at the end. A part that fails, hangs or crashes is
# reported as such and the others still run. Exits 0 when no part failed.
#
#   --cpu           toy sizes on the CPU, in the environment as it is (no kit install);
#                   what the default test run checks so that the kit cannot rot
#   --python PY     the interpreter (default: python3)
#
# Environment: CHECK_BUDGET_S (seconds for the install and all parts), CHECK_PARTS
# (space-separated part names to run; default all).
set -u

SECONDS=0  # the budget counts from here
usage() { echo "usage: $0 [--cpu] [--python PY] OUT_DIR" >&2; exit 2; }
cpu=""
py=python3
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) cpu="--cpu" ;;
    --python) [ $# -ge 2 ] || usage; py="$2"; shift ;;
    -h|--help) usage ;;
    -*) echo "$0: unknown option $1" >&2; usage ;;
    *) [ -z "$out" ] || usage; out="$1" ;;
  esac
  shift
done
[ -n "$out" ] || usage

repo="$(cd "$(dirname "$0")/../.." && pwd)"
kit="$repo/benchmarks/device/kit"
mkdir -p "$out/details/logs" "$out/details/parts" || exit 2
out="$(cd "$out" && pwd)"
details="$out/details"
: > "$details/status.tsv"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/device-check.XXXXXX")" || exit 2
trap 'rm -rf "$scratch"' EXIT
export CHECK_SCRATCH="$scratch"
cd "$repo" || exit 2

# Nothing may reach the network: every model is built in code, every data set is local.
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled
export WANDB_SILENT=true PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"

record() { printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$details/status.tsv"; }

if [ -z "$cpu" ] && [ -d "$kit/wheels" ]; then
  # Into a folder of its own, ahead of the image's packages (transformers is newer here).
  site="$scratch/site"
  started=$SECONDS
  timeout 300 "$py" -m pip install --quiet --no-index --no-deps --no-compile \
    --no-cache-dir --disable-pip-version-check --target "$site" "$kit"/wheels/*.whl \
    > "$details/logs/install.log" 2>&1
  record install $? $((SECONDS - started)) 300
  export PYTHONPATH="$site:$PYTHONPATH"
fi

budget="${CHECK_BUDGET_S:-450}"
"$py" benchmarks/device/check.py list $cpu > "$details/parts.txt" || exit 2
while read -r name limit; do
  if [ -n "${CHECK_PARTS:-}" ] && ! [[ " $CHECK_PARTS " == *" $name "* ]]; then
    record "$name" -1 0 0  # not selected
    continue
  fi
  left=$((budget - SECONDS))
  if [ "$left" -lt 20 ]; then
    record "$name" -2 0 0  # the budget is spent
    continue
  fi
  [ "$limit" -le "$left" ] || limit=$left
  started=$SECONDS
  echo "== $name (limit ${limit} s)"
  timeout -k 10 "$limit" "$py" benchmarks/device/check.py part "$name" "$out" $cpu \
    > "$details/logs/$name.log" 2>&1
  rc=$?
  record "$name" $rc $((SECONDS - started)) "$limit"
  echo "   exit $rc after $((SECONDS - started)) s"
done < "$details/parts.txt"

"$py" benchmarks/device/check.py report "$out" $cpu
rc=$?
tar -czf "$out/details.tar.gz" -C "$out" details && rm -rf "$details"
cat "$out/device_report.md"
exit $rc
