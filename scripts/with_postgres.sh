#!/usr/bin/env bash
# Run a command with FIDELIS_TEST_PG_URL pointing at a real PostgreSQL server, for the
# PostgreSQL tests (they create and drop their own databases).
#
# - FIDELIS_TEST_PG_URL already set: use that server.
# - else, PostgreSQL installed (initdb on PATH or under /usr/lib/postgresql): start a
#   throwaway cluster in a temporary directory, on 127.0.0.1 and a free port, run the
#   command, stop the cluster and delete it.
# - else: warn and run the command; the PostgreSQL tests then skip (or fail when
#   FIDELIS_REQUIRE_PG=1, as in CI).
set -euo pipefail
if [ -n "${FIDELIS_TEST_PG_URL:-}" ]; then exec "$@"; fi

BIN=""
if command -v initdb >/dev/null 2>&1; then
  BIN="$(dirname "$(readlink -f "$(command -v initdb)")")"
else
  BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
fi
if [ -z "$BIN" ] || [ ! -x "$BIN/initdb" ]; then
  echo "with_postgres: PostgreSQL not found (Debian: apt-get install postgresql);" \
       "the PostgreSQL tests will be skipped" >&2
  exec "$@"
fi

DIR="$(mktemp -d "${TMPDIR:-/tmp}/fidelis-pg.XXXXXX")"
AS=()
if [ "$(id -u)" = 0 ]; then
  # initdb refuses to run as root: run the server as the postgres user.
  chown postgres "$DIR"
  AS=(runuser -u postgres --)
fi
PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"${AS[@]}" "$BIN/initdb" -D "$DIR/data" -U fidelis --auth=trust -E UTF8 >"$DIR/initdb.log" 2>&1 \
  || { cat "$DIR/initdb.log" >&2; exit 1; }
stop() {
  "${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap stop EXIT
"${AS[@]}" "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR" start >/dev/null \
  || { cat "$DIR/server.log" >&2; exit 1; }
echo "with_postgres: PostgreSQL $("$BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT" >&2
export FIDELIS_TEST_PG_URL="postgres://fidelis@127.0.0.1:$PORT/postgres"
"$@"
