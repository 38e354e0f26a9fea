#!/usr/bin/env bash
# Cairn benchmark: builds the workload (cached in Benchmarks/work/) and runs Cairn, restic and
# borg on it in interleaved rounds. See Benchmarks/README.md.
#   Benchmarks/run.sh --rounds 3            full run
#   Benchmarks/run.sh --quick               smoke run (1/16 sizes, 1 round)
#   Benchmarks/run.sh --help                every option
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
command -v python3 >/dev/null || { echo "run.sh: python3 is required" >&2; exit 2; }
exec python3 "$here/bench.py" "$@"
