#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on a free loopback port, for tests and benchmarks.
#
#   scripts/pg.sh run CMD [ARGS...]   start a cluster, run CMD with STELLA_TEST_PG_URL set,
#                                     stop the cluster and wait for it; exit with CMD's status
#   scripts/pg.sh start [DIR]         start a cluster in DIR (default: a new /tmp/stella-pg.*)
#                                     in the background; print its URL, then its directory
#   scripts/pg.sh stop DIR            stop the cluster in DIR and delete DIR
#   scripts/pg.sh url DIR             print the URL of the cluster running in DIR
#
# The cluster is unprivileged: run as root, it belongs to the `postgres` user (initdb refuses
# root). It trusts loopback connections, has fsync off (STELLA_PG_DURABLE=1 keeps the
# defaults, for benchmarks) and is meant to be thrown away.
# `run` keeps the server as its own child and waits for it (nothing is left to reap); CI and
# scripts/test-all.sh use it. `start` daemonises the server (pg_ctl), so its exit is reaped by
# init: on a container whose PID 1 does not reap, prefer `run`.
set -euo pipefail

stella_pg_bindir() {
    local found
    if command -v pg_ctl >/dev/null 2>&1 && command -v initdb >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    found="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [ -n "$found" ] && [ -x "$found/pg_ctl" ]; then
        echo "$found"
        return 0
    fi
    echo "error: PostgreSQL binaries not found (install the postgresql package)" >&2
    return 1
}

BIN="$(stella_pg_bindir)"

# Run a PostgreSQL binary as the cluster's owner.
as_owner() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

new_dir() {
    local dir="${1:-}"
    if [ -z "$dir" ]; then
        dir="$(mktemp -d /tmp/stella-pg.XXXXXX)"
    else
        mkdir -p "$dir"
    fi
    chmod 700 "$dir"
    if [ "$(id -u)" -eq 0 ]; then
        chown postgres:postgres "$dir"
    fi
    echo "$dir"
}

init_cluster() {
    local dir="$1" port
    port="$(free_port)"
    as_owner "$BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C \
        >"$dir/initdb.log" 2>&1 || {
        cat "$dir/initdb.log" >&2
        return 1
    }
    cat >>"$dir/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 200
shared_buffers = 128MB
logging_collector = off
EOF
    if [ "${STELLA_PG_DURABLE:-0}" != "1" ]; then
        printf 'fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n' \
            >>"$dir/data/postgresql.conf"
    fi
    echo "$port" >"$dir/port"
}

url_of() {
    echo "postgresql://postgres@127.0.0.1:$(cat "$1/port")/postgres"
}

wait_ready() {
    local dir="$1" pid="${2:-}" i
    for i in $(seq 1 300); do
        if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$(cat "$dir/port")" 2>/dev/null; then
            return 0
        fi
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            break
        fi
        sleep 0.1
    done
    echo "error: PostgreSQL in $dir did not start; its log:" >&2
    cat "$dir/server.log" >&2 || true
    return 1
}

cmd_start() {
    local dir
    dir="$(new_dir "${1:-}")"
    init_cluster "$dir"
    as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -s start >&2
    wait_ready "$dir"
    url_of "$dir"
    echo "$dir"
}

cmd_stop() {
    local dir="${1:?usage: pg.sh stop DIR}"
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$BIN/pg_ctl" -D "$dir/data" -m fast -w -s stop >&2 || true
    fi
    rm -rf "$dir"
}

cmd_run() {
    [ "$#" -gt 0 ] || {
        echo "usage: pg.sh run CMD [ARGS...]" >&2
        return 2
    }
    local dir pid status=0
    dir="$(new_dir)"
    init_cluster "$dir"
    touch "$dir/server.log"
    [ "$(id -u)" -ne 0 ] || chown postgres:postgres "$dir/server.log"
    as_owner "$BIN/postgres" -D "$dir/data" >>"$dir/server.log" 2>&1 &
    pid=$!
    # shellcheck disable=SC2064  # expand now: the trap must stop this cluster
    trap "stop_child '$dir' $pid" EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    wait_ready "$dir" "$pid"
    echo "== PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') at $(url_of "$dir")" >&2
    STELLA_TEST_PG_URL="$(url_of "$dir")" "$@" || status=$?
    return "$status"
}

stop_child() {
    local dir="$1" pid="$2"
    as_owner "$BIN/pg_ctl" -D "$dir/data" -m fast -w -s stop >/dev/null 2>&1 || kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -rf "$dir"
}

case "${1:-}" in
    run) shift; cmd_run "$@" ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    url) url_of "${2:?usage: pg.sh url DIR}" ;;
    *)
        sed -n '2,16p' "$0" >&2
        exit 2
        ;;
esac
