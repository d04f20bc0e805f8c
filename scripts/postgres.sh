#!/usr/bin/env bash
# Starts (once) a private PostgreSQL server for the registry tests and prints its admin URL.
# Idempotent: installs Debian's postgresql package if missing, initialises the cluster once,
# starts it if it is not running. It listens on loopback only, on its own port and data folder,
# so it never touches a system cluster.
#   export CANARY_TEST_POSTGRES=$(scripts/postgres.sh)
set -euo pipefail

port=${CANARY_PG_PORT:-55432}
data=${CANARY_PG_DIR:-/var/tmp/canary-lab-pg}

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -z "$bindir" ] || [ ! -x "$bindir/pg_ctl" ]; then
  echo "postgres.sh: installing Debian's postgresql package" >&2
  if [ "$(id -u)" -ne 0 ]; then
    echo "postgres.sh: PostgreSQL is missing and this is not root: run 'sudo apt-get install postgresql'" >&2
    exit 2
  fi
  apt-get install -y -qq postgresql >/dev/null 2>&1 \
    || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
fi

# PostgreSQL refuses to run as root: the server runs as the `postgres` user the package creates.
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi
}

if [ ! -f "$data/PG_VERSION" ]; then
  mkdir -p "$data"
  [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$data"
  as_pg "'$bindir/initdb' -D '$data' -U postgres -A trust --no-sync" >/dev/null
fi
mkdir -p "$data/sock"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$data/sock"

if ! as_pg "'$bindir/pg_ctl' -D '$data' status" >/dev/null 2>&1; then
  as_pg "'$bindir/pg_ctl' -D '$data' -l '$data/server.log' -w -t 60 \
    -o \"-p $port -k $data/sock -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200\" start" >/dev/null
fi

echo "postgres://postgres@127.0.0.1:$port/postgres"
