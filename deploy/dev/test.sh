#!/usr/bin/env bash
# `make test`: every test, on a fresh machine. Starts what the integration tests need on free
# private ports with throwaway data — a PostgreSQL cluster, a ClickHouse server (installed from
# Debian's packages when missing and possible) — builds the binaries the end-to-end tests run,
# runs `go test -race ./...`, runs each fuzz target briefly, and cleans up even on failure.
#
# Environment: FUZZTIME (default 5s per fuzz target; 0 skips fuzzing),
#              GOTEST_FLAGS (extra flags for go test, e.g. "-run TestE2E -v").
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)

tmp=$(mktemp -d /tmp/tollgate-test.XXXXXX)
chmod 755 "$tmp" # the PostgreSQL server runs as an unprivileged user and must reach it
cleanup() {
  set +e
  [ -n "${ch_started:-}" ] && bash deploy/dev/clickhouse.sh stop "$tmp/clickhouse" >/dev/null 2>&1
  bash deploy/dev/postgres.sh stop "$tmp/pg" >/dev/null 2>&1
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port prints a TCP port on 127.0.0.1 that nothing listens on, below the kernel's
# ephemeral range: a port in that range can be the local end of some outgoing connection,
# which no probe sees and which makes a server's bind fail (PostgreSQL's did once, right after
# a load test left thousands of loopback connections).
free_port() {
  local p low
  low=$(cut -f1 /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$low" -gt 12000 ] || low=32768
  while :; do
    p=$((10000 + RANDOM % (low - 10000)))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}

echo "== PostgreSQL (private cluster in $tmp/pg)"
pg_dsn=$(bash deploy/dev/postgres.sh start "$tmp/pg" "$(free_port)")
export TOLLGATE_TEST_PG_DSN="$pg_dsn"
echo "   $pg_dsn"

echo "== ClickHouse (private server in $tmp/clickhouse)"
ch_native=$(free_port); ch_http=$(free_port)
while [ "$ch_http" = "$ch_native" ]; do ch_http=$(free_port); done # free_port cannot know the other is taken
if bash deploy/dev/clickhouse.sh start "$tmp/clickhouse" "$ch_native" "$ch_http"; then
  ch_started=1
  export TOLLGATE_TEST_CLICKHOUSE_ADDR="127.0.0.1:$ch_native"
  echo "   127.0.0.1:$ch_native"
else
  rc=$?
  if [ "${CI:-}" = true ]; then
    echo "ClickHouse could not be started (exit $rc): CI must run every test" >&2; exit 1
  fi
  echo "   ClickHouse could not be started (exit $rc): ClickHouse tests will SKIP" >&2
fi

echo "== building binaries for the end-to-end tests"
go build -o "$tmp/bin/" ./edge/cmd/edge ./ledgerd/cmd/ledgerd ./analytics/cmd/analytics ./bench/cmd/bench ./bench/cmd/devstack
export TOLLGATE_TEST_BIN_DIR="$tmp/bin"
export TOLLGATE_TEST_REPO_DIR="$repo"

echo "== go vet"
go vet ./...

echo "== go test -race"
# shellcheck disable=SC2086
go test -race -count=1 -timeout 20m ${GOTEST_FLAGS:-} ./...

fuzztime=${FUZZTIME:-5s}
if [ "$fuzztime" != 0 ]; then
  echo "== fuzzing each target for $fuzztime (make fuzz runs longer)"
  bash deploy/dev/fuzz.sh "$fuzztime"
fi
echo "== all tests passed"
