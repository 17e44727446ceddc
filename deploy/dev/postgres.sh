#!/usr/bin/env bash
# Private, throwaway PostgreSQL cluster for tests and local runs.
#
#   deploy/dev/postgres.sh start DIR PORT   # initdb (if needed) + start; prints the DSN
#   deploy/dev/postgres.sh stop DIR
#
# PostgreSQL refuses to run as root, so as root the cluster runs as the unprivileged user
# "tollgate-pg" (created when missing). Exit code 3: PostgreSQL binaries not found.
set -euo pipefail

cmd=${1:?usage: postgres.sh start DIR PORT | stop DIR}
dir=${2:?missing DIR}

bindir=""
for d in /usr/lib/postgresql/*/bin; do
  [ -x "$d/pg_ctl" ] && bindir=$d
done
if [ -z "$bindir" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "postgres.sh: installing postgresql from Debian packages" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null 2>&1 ||
      { apt-get update -q >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null; }
    for d in /usr/lib/postgresql/*/bin; do [ -x "$d/pg_ctl" ] && bindir=$d; done
  fi
  [ -n "$bindir" ] || { echo "postgres.sh: no PostgreSQL server binaries under /usr/lib/postgresql/*/bin" >&2; exit 3; }
fi

run_as() {
  if [ "$(id -u)" = 0 ]; then
    id tollgate-pg >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin tollgate-pg
    chown -R tollgate-pg "$dir"
    su -s /bin/sh tollgate-pg -c "test -w '$dir'" ||
      { echo "postgres.sh: user tollgate-pg cannot reach $dir (a parent directory is not world-searchable; use a directory made with mode 0755)" >&2; exit 1; }
    su -s /bin/sh tollgate-pg -c "$*"
  else
    sh -c "$*"
  fi
}

case "$cmd" in
start)
  port=${3:?missing PORT}
  mkdir -p "$dir"
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    run_as "'$bindir/initdb' -D '$dir/data' -U postgres --auth=trust -E UTF8 --no-sync >'$dir/initdb.log' 2>&1" ||
      { cat "$dir/initdb.log" >&2; exit 1; }
  fi
  # fsync off: throwaway data, and it keeps the test suite fast on shared disks.
  run_as "'$bindir/pg_ctl' -D '$dir/data' -l '$dir/postgres.log' -w -t 60 \
    -o \"-p $port -k '$dir' -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200\" start >/dev/null" ||
    { echo "postgres.sh: start failed; log:" >&2; tail -20 "$dir/postgres.log" >&2; exit 1; }
  echo "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable"
  ;;
stop)
  [ -f "$dir/data/postmaster.pid" ] || exit 0
  run_as "'$bindir/pg_ctl' -D '$dir/data' -m immediate -w stop >/dev/null 2>&1" || true
  ;;
*)
  echo "usage: postgres.sh start DIR PORT | stop DIR" >&2; exit 2 ;;
esac
