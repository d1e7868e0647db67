#!/usr/bin/env bash
# Load test of the REST facade (see bench/load_test.py): 100 items through the CLI with --jobs 2
# and through the local backend with 2 workers, then 30 s of 200 submissions/s; pass
# --backend kubernetes for the kubernetes backend beside kubectl create. Extra arguments go
# to bench/load_test.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python bench/load_test.py "$@"
