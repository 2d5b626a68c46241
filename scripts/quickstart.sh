#!/usr/bin/env bash
# Set up the virtualenv, then run the orchestrator on the embedded SQLite store with the
# sample DAGs, one run of each; it prints the web console's URL. Stop it with Ctrl-C.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
stella_ensure_venv
exec .venv/bin/stella orch serve --dags examples/ --run-samples "$@"
