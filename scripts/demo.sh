#!/usr/bin/env bash
# The main job: set up .venv, then make Shapes data, train the offline preset, write samples + report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/omni-gpt2o demo "$@"
