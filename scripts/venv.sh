# shellcheck shell=bash
# Sourced by the other scripts: create or refresh the project's virtualenv in .venv.
# Idempotent: the editable install is redone only when pyproject.toml changed since the last
# successful one (its hash is kept in .venv/.stella-install-stamp), so reruns are quick.

stella_ensure_venv() {
    local python="${PYTHON:-python3}"
    if ! command -v "$python" >/dev/null 2>&1; then
        echo "error: $python not found; install Python 3.11 or newer (or set PYTHON)" >&2
        return 1
    fi
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "error: Python 3.11 or newer is required, $python is $("$python" -V 2>&1)" >&2
        return 1
    fi
    if [ ! -x .venv/bin/python ]; then
        echo "creating .venv with $("$python" -V 2>&1)" >&2
        "$python" -m venv .venv
    fi
    local stamp=.venv/.stella-install-stamp
    local want
    want="$(.venv/bin/python -c 'import hashlib,sys; print(hashlib.sha256(open("pyproject.toml","rb").read()).hexdigest())')"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "installing stellaorch and its dev tools into .venv" >&2
        .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
        echo "$want" >"$stamp"
    fi
}
