#!/usr/bin/env bash
# A throwaway PostgreSQL (15 or newer) for the tests: a fresh cluster in a temporary
# directory, on a free loopback port, trusted on loopback only.
#
#   eval "$(scripts/postgres.sh start)"   # exports FINETUNE_TEST_DATABASE_URL and FINETUNE_TEST_PG_DIR
#   cargo test --test integration store::
#   scripts/postgres.sh stop              # stops it and removes everything ($FINETUNE_TEST_PG_DIR)
#
# `start` prints only the export lines on stdout (its progress goes to stderr). It installs
# Debian's PostgreSQL with apt-get when no server binaries are found. initdb refuses to run as
# root, so as root (CI) the cluster runs as the `postgres` system user the package creates.
# For speed it runs with fsync and synchronous_commit off: fine for a cluster that is thrown
# away after the run, never for data anyone keeps.
set -euo pipefail

log() { printf 'postgres.sh: %s\n' "$*" >&2; }

# The directory of initdb/pg_ctl/postgres of version 15 or newer, not from PATH: pg_config's
# bindir first, then Debian's versioned directories, newest first.
find_bindir() {
  local dir candidates=()
  if command -v pg_config >/dev/null 2>&1; then
    candidates+=("$(pg_config --bindir 2>/dev/null || true)")
  fi
  while IFS= read -r dir; do candidates+=("$dir"); done < <(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -rn)
  for dir in "${candidates[@]}"; do
    [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ] && [ -x "$dir/pg_isready" ] || continue
    local major
    major=$("$dir/initdb" --version | awk '{print $3}' | cut -d. -f1)
    if [ "$major" -ge 15 ] 2>/dev/null; then echo "$dir"; return 0; fi
  done
  return 1
}

# Runs a command as the cluster's owner: the `postgres` user when we are root.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  local bindir
  if ! bindir=$(find_bindir); then
    log "no PostgreSQL 15+ found: installing Debian's package"
    apt-get update >&2
    if apt-cache show postgresql-15 >/dev/null 2>&1; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql-15 >&2
    else
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql >&2
    fi
    bindir=$(find_bindir) || { log "still no PostgreSQL 15+ after installing it"; exit 1; }
  fi
  local dir
  # Under /tmp whatever TMPDIR says: the server's user must reach it, and a socket path
  # must stay short (about 100 bytes).
  dir=$(mktemp -d /tmp/finetune-pg.XXXXXX)
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || { log "no postgres user to run the server as"; rm -rf "$dir"; exit 1; }
    chown postgres: "$dir"
  fi
  as_owner "$bindir/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; rm -rf "$dir"; exit 1; }
  cat >>"$dir/data/postgresql.conf" <<EOF
# scripts/postgres.sh: a throwaway test cluster (loopback only, no durability).
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 500
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  # A random port until one is free (another cluster or service may hold the first pick).
  local port attempt
  for attempt in 1 2 3 4 5 6 7 8 9 10; do
    port=$((20000 + RANDOM % 40000))
    if as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -o "-p $port" -w -t 60 start >&2; then
      break
    fi
    log "port $port refused (attempt $attempt)"; port=""
  done
  if [ -z "$port" ]; then
    cat "$dir/server.log" >&2 || true; rm -rf "$dir"; exit 1
  fi
  local tries=0
  until "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; do
    tries=$((tries + 1))
    [ "$tries" -lt 300 ] || { log "not ready after 30 s"; stop "$dir"; exit 1; }
    sleep 0.1
  done
  log "PostgreSQL $("$bindir/pg_ctl" --version | awk '{print $3}') on 127.0.0.1:$port, in $dir"
  echo "export FINETUNE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:$port/postgres"
  echo "export FINETUNE_TEST_PG_DIR=$dir"
}

stop() {
  local dir=${1:-${FINETUNE_TEST_PG_DIR:-}}
  [ -n "$dir" ] || { log "stop: which cluster? (pass its directory or set FINETUNE_TEST_PG_DIR)"; exit 1; }
  [ -d "$dir" ] || return 0
  local bindir
  if [ -f "$dir/data/postmaster.pid" ] && bindir=$(find_bindir); then
    # Immediate: nothing in a test cluster needs a clean shutdown.
    as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop >&2 || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop [DIR]" >&2; exit 2 ;;
esac
