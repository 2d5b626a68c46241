#!/usr/bin/env bash
# Set up the virtualenv, then lint, type-check and test. Every check runs; the exit status is
# non-zero if any of them failed (pytest's "no tests collected", exit 5, counts as a failure).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=scripts/venv.sh
source scripts/venv.sh
stella_ensure_venv

failed=()
run_check() {
    local name="$1"
    shift
    echo "== $name: $*" >&2
    if ! "$@"; then
        failed+=("$name")
    fi
}

run_check ruff .venv/bin/ruff check --no-cache src tests
run_check mypy .venv/bin/mypy src
# In-process by default (timing-sensitive tests are steadier); STELLA_TEST_WORKERS=2 runs two
# test processes (pytest-xdist), each file kept in one process so module fixtures are shared.
workers="${STELLA_TEST_WORKERS:-0}"
parallel=()
if [ "$workers" != "0" ]; then
    parallel=(-n "$workers" --dist loadfile)
fi
run_check pytest .venv/bin/pytest "${parallel[@]}" "$@"

if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "all checks passed" >&2
