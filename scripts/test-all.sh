#!/usr/bin/env bash
# Every check, with the integration suite run against both stores: SQLite and PostgreSQL.
# Uses the server in STELLA_TEST_PG_URL if set, else a throwaway cluster (scripts/pg.sh) that
# is stopped afterwards; needs the PostgreSQL binaries then (apt-get install postgresql).
# Arguments go to pytest, e.g. `bash scripts/test-all.sh -k postgresql tests/integration`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export STELLA_TEST_PG_REQUIRED=1 # PostgreSQL cases fail, not skip, without a server
if [ -n "${STELLA_TEST_PG_URL:-}" ]; then
    exec bash scripts/test.sh "$@"
fi
exec bash scripts/pg.sh run bash scripts/test.sh "$@"
