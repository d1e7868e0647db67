#!/usr/bin/env bash
# Load test of the REST facade (see bench/load_test.py): 100 tasks at max_concurrent_videos 4
# and 8 on the local backend; pass --cluster to add the kubernetes backend. Extra arguments go
# to bench/load_test.py.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python bench/load_test.py "$@"
