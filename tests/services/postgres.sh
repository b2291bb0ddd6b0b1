#!/usr/bin/env bash
# A throw-away PostgreSQL server for the slow tests of `rdbench tune --storage postgresql://...`.
#   postgres.sh start FOLDER PORT   initdb in FOLDER/data, start on 127.0.0.1:PORT (socket in
#                                   FOLDER), create the database "optuna"; prints its URL last
#   postgres.sh stop FOLDER         stop that server
# The server runs as an unprivileged user (PostgreSQL refuses root): the caller, or, for root,
# the "postgres" user of Debian's packages. Finds the binaries of any installed major version
# (/usr/lib/postgresql/<v>/bin) or on PATH; exits 1 with one line saying why it cannot.
set -u
fail() { echo "$*"; exit 1; }
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$bin" ] || bin=$(dirname "$(command -v initdb 2>/dev/null || echo /nonexistent/initdb)")
[ -x "$bin/initdb" ] || fail "no PostgreSQL server binaries (initdb) here: apt-get install postgresql"
action=${1:-}; folder=${2:-}
[ -n "$folder" ] || fail "usage: postgres.sh start FOLDER PORT | stop FOLDER"
as_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
if [ "$(id -u)" = 0 ]; then id postgres >/dev/null 2>&1 || fail "running as root needs the postgres user (Debian's postgresql package)"; fi
case "$action" in
  start)
    port=${3:-}
    [ -n "$port" ] || fail "usage: postgres.sh start FOLDER PORT"
    mkdir -p "$folder"
    [ "$(id -u)" = 0 ] && chown postgres "$folder"
    as_user "$bin/initdb" -D "$folder/data" -A trust -U rdbench >"$folder/initdb.log" 2>&1 || fail "initdb failed (see $folder/initdb.log)"
    as_user "$bin/pg_ctl" -D "$folder/data" -l "$folder/server.log" -w -t 60 \
      -o "-p $port -k $folder -c listen_addresses=127.0.0.1 -c max_connections=50 -c fsync=off" start >/dev/null \
      || fail "the server did not start (see $folder/server.log)"
    as_user "$bin/createdb" -h 127.0.0.1 -p "$port" -U rdbench optuna || fail "createdb optuna failed"
    echo "postgresql://rdbench@127.0.0.1:$port/optuna"
    ;;
  stop)
    as_user "$bin/pg_ctl" -D "$folder/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  *) fail "usage: postgres.sh start FOLDER PORT | stop FOLDER" ;;
esac
