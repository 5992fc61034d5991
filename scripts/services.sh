#!/usr/bin/env bash
# services.sh - the real servers Herald's integration tests talk to, on loopback only.
#
#   scripts/services.sh up     [service...]           install what is missing, start, wait until ready
#                                                     (as root, unless every server named already answers)
#   scripts/services.sh down   [--purge] [service...] stop (--purge also deletes their data)
#   scripts/services.sh status [service...]           one line per service: up or down (exit 1 if any is down)
#
# Services (none given = all):
#   postgres  PostgreSQL 15 (Debian)        127.0.0.1:5432   user herald / password herald, database herald (SUPERUSER)
#   redis     Redis 7 (Debian)              127.0.0.1:6379   no password, no persistence
#   rabbitmq  RabbitMQ 3.10 (Debian)        127.0.0.1:5672   guest / guest, vhost /; management :15672, stream :5552
#   nats      nats-server 2.9 + JetStream   127.0.0.1:4222   monitoring :8222
#   sqs       local-aws-sqs 2.0.2 (npm)     127.0.0.1:9324   any key/secret, region us-east-1
#   (Kafka has no server: tests use librdkafka's in-process mock cluster, or HERALD_KAFKA_BOOTSTRAP.)
#
# Made for a Debian 12 machine or container, run as root, with or without systemd (it is not used):
# every server is started directly, and each background process has stdin, stdout and stderr
# redirected, so that `scripts/test.sh | tee log` sees end of file. Re-running `up` leaves a server
# that already answers alone.
#
# Env: HERALD_STATE  folder for logs, pid files, JetStream store and the npm install of the SQS
#                    emulator (default /tmp/herald-services)
set -euo pipefail

STATE="${HERALD_STATE:-/tmp/herald-services}"
ALL=(postgres redis rabbitmq nats sqs)

T0=$EPOCHREALTIME
CMD="${1:-}"
ts() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%5.1fs", b - a }'; }
log() { echo "[services $CMD $(ts)] $*"; }
err() { echo "[services $CMD $(ts)] ERROR: $*" >&2; }
die() { err "$*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
# wait_until SECONDS WHAT COMMAND... : run COMMAND every 0.2 s until it succeeds
wait_until() {
  local limit=$1 what=$2 end; shift 2
  end=$(( ${EPOCHREALTIME%.*} + limit ))
  until "$@" </dev/null >/dev/null 2>&1; do
    [ "${EPOCHREALTIME%.*}" -ge "$end" ] && return 1
    sleep 0.2
  done
  log "$what ready"
}
need_root() { [ "$(id -u)" = 0 ] || die "'$CMD' must run as root (it installs packages and starts servers as their users)"; }

# ------------------------------------------------------------------ readiness checks (up and status)
postgres_ok() {
  command -v psql >/dev/null || return 1
  [ "$(PGPASSWORD=herald PGCONNECT_TIMEOUT=3 psql -h 127.0.0.1 -p 5432 -U herald -d herald -XqtAc \
        'SELECT rolsuper FROM pg_roles WHERE rolname = current_user' 2>/dev/null)" = t ]
}
redis_ok() { command -v redis-cli >/dev/null && [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ]; }
# AMQP and stream listeners open, and the management API answers guest:guest
rabbitmq_ok() {
  port_open 5672 && port_open 5552 \
    && curl -sf -m 5 -u guest:guest http://127.0.0.1:15672/api/overview 2>/dev/null | grep -q '"rabbitmq_version"'
}
nats_ok() { curl -sf -m 3 'http://127.0.0.1:8222/healthz?js-enabled-only=true' >/dev/null 2>&1; }
sqs_ok() {
  curl -sf -m 3 -X POST -H 'Content-Type: application/x-amz-json-1.0' -H 'X-Amz-Target: AmazonSQS.ListQueues' \
    -d '{}' http://127.0.0.1:9324/ 2>/dev/null | grep -q QueueUrls
}

# ------------------------------------------------------------------ arguments
[ -n "$CMD" ] || { usage; exit 2; }
shift
PURGE=0; WANT=()
for a in "$@"; do
  case "$a" in
    --purge) [ "$CMD" = down ] || die "--purge is only for down"; PURGE=1 ;;
    postgres|redis|rabbitmq|nats|sqs) WANT+=("$a") ;;
    *) die "unknown service '$a' (known: ${ALL[*]})" ;;
  esac
done
[ ${#WANT[@]} -gt 0 ] || WANT=("${ALL[@]}")
want() { local s; for s in "${WANT[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1; }

# ================================================================== status
cmd_status() {
  local s rc=0 addr
  for s in "${WANT[@]}"; do
    case $s in
      postgres) addr="Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald" ;;
      redis)    addr="127.0.0.1:6379" ;;
      rabbitmq) addr="amqp://guest:guest@127.0.0.1:5672/ (management http://127.0.0.1:15672/)" ;;
      nats)     addr="nats://127.0.0.1:4222 (JetStream; monitoring http://127.0.0.1:8222/)" ;;
      sqs)      addr="http://127.0.0.1:9324" ;;
    esac
    if "${s}_ok"; then printf '%-9s up    %s\n' "$s" "$addr"; else printf '%-9s down\n' "$s"; rc=1; fi
  done
  return $rc
}

# ================================================================== up
pkg_ok() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

install_missing() {
  local need=() made_policy=0
  if want postgres && ! pkg_ok postgresql-15; then need+=(postgresql-15 postgresql-client-15); fi
  if want redis && ! pkg_ok redis-server; then need+=(redis-server); fi
  if want rabbitmq && ! pkg_ok rabbitmq-server; then need+=(rabbitmq-server); fi
  if want nats && ! pkg_ok nats-server; then need+=(nats-server); fi
  if want sqs && ! { command -v node && command -v npm; } >/dev/null; then need+=(nodejs npm); fi
  if ! command -v curl >/dev/null; then need+=(curl ca-certificates); fi
  [ ${#need[@]} -gt 0 ] || return 0
  log "apt-get install ${need[*]}"
  # package scripts must not start daemons: they are started below, bound to loopback
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  local rc=0
  {
    DEBIAN_FRONTEND=noninteractive apt-get update -qq \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
           -o Dpkg::Options::=--force-confold "${need[@]}"
  } </dev/null >"$STATE/apt.log" 2>&1 || rc=$?
  [ $made_policy = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ $rc = 0 ] || { tail -20 "$STATE/apt.log" >&2; die "apt-get install failed (log: $STATE/apt.log)"; }
  log "installed"
}

start_postgres() {
  cd /   # runuser -u postgres must not start in a folder postgres cannot read
  install -d -o postgres -g postgres -m 2775 /var/run/postgresql
  if ! pg_lsclusters -h 2>/dev/null | awk '$1 == "15" && $2 == "main" { f = 1 } END { exit !f }'; then
    log "postgres: creating cluster 15/main"
    pg_createcluster 15 main -p 5432 -- --auth-local=peer --auth-host=scram-sha-256 </dev/null >"$STATE/postgres-create.log" 2>&1 \
      || die "pg_createcluster failed: $(tail -5 "$STATE/postgres-create.log")"
  fi
  # loopback only (Debian's default 'localhost' would also take ::1); room for the test projects' connection pools when
  # they run side by side (the default 100 ran out: "53300 too many clients"); read at the next start
  local conf=/etc/postgresql/15/main/conf.d/herald.conf
  local want
  want=$(printf "# written by Herald's scripts/services.sh\nlisten_addresses = '127.0.0.1'\nport = 5432\nmax_connections = 300\n")
  if [ -d "${conf%/*}" ] && [ "$(cat "$conf" 2>/dev/null)" != "$want" ]; then
    printf '%s\n' "$want" > "$conf"
  fi
  if pg_isready -q -h 127.0.0.1 -p 5432; then
    log "postgres already running"
  else
    pg_ctlcluster 15 main start </dev/null >"$STATE/postgres-start.log" 2>&1 \
      || die "pg_ctlcluster start failed: $(cat "$STATE/postgres-start.log"; tail -5 /var/log/postgresql/postgresql-15-main.log 2>/dev/null)"
    wait_until 30 "postgres 127.0.0.1:5432" pg_isready -q -h 127.0.0.1 -p 5432 \
      || die "postgres did not start: $(tail -5 /var/log/postgresql/postgresql-15-main.log 2>/dev/null)"
  fi
  if ! postgres_ok; then
    log "postgres: creating role and database herald"
    runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 </dev/null >/dev/null -c "
      DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'herald') THEN CREATE ROLE herald; END IF;
      END \$\$;" -c "ALTER ROLE herald LOGIN SUPERUSER PASSWORD 'herald'" \
      || die "could not create role herald"
    if [ "$(runuser -u postgres -- psql -XqtAc "SELECT 1 FROM pg_database WHERE datname = 'herald'" </dev/null)" != 1 ]; then
      runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE herald OWNER herald" </dev/null >/dev/null \
        || die "could not create database herald"
    fi
    postgres_ok || die "postgres: cannot log in as herald over TCP with a password (check pg_hba.conf)"
  fi
}

start_redis() {
  if redis_ok; then log "redis already running"; return; fi
  ! port_open 6379 || die "127.0.0.1:6379 is taken by a process that is not a working redis server"
  install -d -o redis -g redis "$STATE/redis"
  # Debian's /etc/redis/redis.conf expects systemd: give everything on the command line instead
  runuser -u redis -- redis-server --bind 127.0.0.1 --port 6379 --daemonize yes \
    --pidfile "$STATE/redis/redis.pid" --logfile "$STATE/redis/redis.log" --dir "$STATE/redis" \
    --save '' --appendonly no </dev/null >/dev/null 2>&1 \
    || die "redis-server failed: $(tail -5 "$STATE/redis/redis.log" 2>/dev/null)"
  wait_until 15 "redis 127.0.0.1:6379" redis_ok || die "redis did not start: $(tail -5 "$STATE/redis/redis.log" 2>/dev/null)"
}

write_if_changed() { # FILE CONTENT
  if [ ! -f "$1" ] || [ "$(cat "$1")" != "$2" ]; then printf '%s\n' "$2" > "$1"; chown rabbitmq:rabbitmq "$1"; fi
}
start_rabbitmq() {
  # epmd, started by the first Erlang node, listens on loopback only
  export ERL_EPMD_ADDRESS=127.0.0.1
  write_if_changed /etc/rabbitmq/rabbitmq-env.conf 'NODENAME=rabbit@localhost
NODE_IP_ADDRESS=127.0.0.1
SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"'
  write_if_changed /etc/rabbitmq/rabbitmq.conf 'listeners.tcp.1 = 127.0.0.1:5672
management.tcp.ip = 127.0.0.1
management.tcp.port = 15672
stream.listeners.tcp.1 = 127.0.0.1:5552
stream.advertised_host = localhost
loopback_users.guest = true'
  write_if_changed /etc/rabbitmq/enabled_plugins '[rabbitmq_management,rabbitmq_stream,rabbitmq_stream_management].'
  if rabbitmq_ok; then log "rabbitmq already running"; return; fi
  if epmd -names 2>/dev/null | grep -q '^name rabbit '; then
    log "rabbitmq: node already registered, waiting for it"
  else
    # always through the /usr/sbin wrappers: they switch to the rabbitmq user and its Erlang cookie
    rabbitmq-server -detached </dev/null >"$STATE/rabbitmq-start.log" 2>&1 \
      || die "rabbitmq-server failed: $(cat "$STATE/rabbitmq-start.log")"
  fi
  # await_startup fails at once until the node has registered with epmd, so poll it
  wait_until 90 "rabbitmq node" rabbitmqctl -q await_startup --timeout 5 \
    || die "rabbitmq did not start: $(tail -20 /var/log/rabbitmq/rabbit@localhost.log 2>/dev/null)"
  wait_until 30 "rabbitmq 127.0.0.1:5672 (management :15672, stream :5552)" rabbitmq_ok \
    || die "rabbitmq: listeners or management API missing"
}

start_nats() {
  if nats_ok; then log "nats already running"; return; fi
  ! port_open 4222 || die "127.0.0.1:4222 is taken by a process that is not a working nats server"
  mkdir -p "$STATE/nats"
  setsid nats-server -a 127.0.0.1 -p 4222 -m 8222 -js -sd "$STATE/nats" \
    -P "$STATE/nats.pid" -l "$STATE/nats.log" </dev/null >/dev/null 2>&1 &
  wait_until 15 "nats 127.0.0.1:4222 (JetStream)" nats_ok || die "nats did not start: $(tail -5 "$STATE/nats.log" 2>/dev/null)"
}

write_sqs_shim() {
  cat > "$STATE/sqs/sqs-server.js.new" <<'JS'
// local-aws-sqs (npm) behind fixes for AWSSDK.SQS v4, which speaks AWS JSON 1.0 only:
//  1. an empty ReceiveMessage result comes back as an empty body; the .NET SDK needs "{}".
//  2. MessageSystemAttributeNames (the current name) is ignored; it is copied to AttributeNames.
//  3. long polling: the emulator waits the whole WaitTimeSeconds unless MaxNumberOfMessages arrive,
//     and returns one message several times if its VisibilityTimeout ends during the wait;
//     here a long poll is done as WaitTimeSeconds=0 receives every 50 ms until one returns messages.
//  4. ChangeMessageVisibility counts as a receive in the emulator (AWS counts receives only):
//     ApproximateReceiveCount in ReceiveMessage results is replaced by the shim's own count of receives.
//     The emulator's redrive (maxReceiveCount) still counts visibility changes too.
//  5. the MD5 of message attributes counts a string value's UTF-16 units, not its UTF-8 bytes, so any
//     non-ASCII attribute fails the SDK's check; the hash function is replaced by a correct one.
// Not fixed: a FIFO message group is not locked while one of its messages is in flight;
// PurgeQueue takes effect only after 60 s.
const http = require("http");
const crypto = require("crypto");
const { PassThrough } = require("stream");
require("aws-md5-of-message-attributes").md5OfMessageAttributes = (attributes) => {
  const parts = [];
  const u32 = (n) => { const b = Buffer.alloc(4); b.writeUInt32BE(n); return b; };
  for (const key of Object.keys(attributes).sort()) {
    const { DataType, StringValue, BinaryValue } = attributes[key];
    const name = Buffer.from(key, "utf-8"), type = Buffer.from(DataType, "utf-8");
    const binary = DataType.startsWith("Binary");
    const value = binary ? Buffer.from(BinaryValue, "base64") : Buffer.from(StringValue, "utf-8");
    parts.push(u32(name.length), name, u32(type.length), type, Buffer.from([binary ? 2 : 1]), u32(value.length), value);
  }
  return crypto.createHash("md5").update(Buffer.concat(parts)).digest("hex");
};
const { createRequestHandler } = require("local-aws-sqs");
const receives = new Map();
const idOfHandle = (h) => { try { const t = Buffer.from(String(h), "base64").toString(); return JSON.parse(t.slice(t.indexOf("{"))).MessageId; } catch { return undefined; } };
function countReceives(body) {
  const o = JSON.parse(body);
  for (const m of o.Messages || []) {
    const n = (receives.get(m.MessageId) || 0) + 1;
    receives.set(m.MessageId, n);
    if (m.Attributes && m.Attributes.ApproximateReceiveCount !== undefined) m.Attributes.ApproximateReceiveCount = String(n);
  }
  return JSON.stringify(o);
}
const port = Number(process.env.SQS_PORT || 9324);
const hostname = process.env.SQS_HOST || "127.0.0.1";
const JSON_CT = "application/x-amz-json-1.0";
const { requestHandler } = createRequestHandler({ port, hostname, emulateQueueCreationLifecycle: false, emulateLazyQueues: false });
function call(req, body) {
  return new Promise((resolve) => {
    const fake = new PassThrough();
    Object.assign(fake, { headers: req.headers, method: req.method, url: req.url, socket: req.socket });
    const headers = {};
    const out = { statusCode: 200, setHeader: (k, v) => { headers[k.toLowerCase()] = v; }, getHeader: (k) => headers[k.toLowerCase()],
      end: (chunk) => resolve({ status: out.statusCode, headers, body: chunk == null ? "" : String(chunk) }) };
    requestHandler(fake, out);
    fake.end(body);
  });
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", async () => {
    const raw = Buffer.concat(chunks).toString();
    const json = req.headers["content-type"] === JSON_CT;
    const action = json ? String(req.headers["x-amz-target"] || "").split(".")[1] : null;
    let r;
    try {
      if (json && action === "ReceiveMessage") {
        const o = JSON.parse(raw || "{}");
        if (Array.isArray(o.MessageSystemAttributeNames))
          o.AttributeNames = [...new Set([...(o.AttributeNames || []), ...o.MessageSystemAttributeNames])];
        const wait = o.WaitTimeSeconds;
        if (wait === undefined || Number(wait) === 0) r = await call(req, JSON.stringify(o));
        else {
          const deadline = Date.now() + Number(wait) * 1000;
          o.WaitTimeSeconds = 0;
          for (;;) {
            r = await call(req, JSON.stringify(o));
            if (r.status !== 200 || r.body.length > 2 || Date.now() >= deadline || req.socket.destroyed) break;
            await sleep(50);
          }
        }
        if (r.status === 200 && r.body.length > 2) r.body = countReceives(r.body);
      } else {
        if (json && (action === "DeleteMessage" || action === "DeleteMessageBatch")) {
          const o = JSON.parse(raw || "{}");
          for (const h of [o.ReceiptHandle, ...(o.Entries || []).map((e) => e.ReceiptHandle)]) if (h) receives.delete(idOfHandle(h));
        }
        r = await call(req, raw);
      }
    } catch (e) { r = { status: 500, headers: { "content-type": JSON_CT }, body: JSON.stringify({ __type: "InternalFailure", message: String(e) }) }; }
    if (json && r.status === 200 && !r.body) r.body = "{}";
    for (const [k, v] of Object.entries(r.headers)) res.setHeader(k, v);
    res.statusCode = r.status;
    res.end(r.body);
  });
}).listen(port, hostname, () => console.log(`local-aws-sqs (shim) listening on http://${hostname}:${port}`));
JS
  if cmp -s "$STATE/sqs/sqs-server.js.new" "$STATE/sqs/sqs-server.js"; then rm -f "$STATE/sqs/sqs-server.js.new"
  else mv -f "$STATE/sqs/sqs-server.js.new" "$STATE/sqs/sqs-server.js"; fi
}
start_sqs() {
  if sqs_ok; then log "sqs already running"; return; fi
  ! port_open 9324 || die "127.0.0.1:9324 is taken by a process that is not a working sqs server"
  mkdir -p "$STATE/sqs"
  if [ ! -f "$STATE/sqs/node_modules/local-aws-sqs/package.json" ]; then
    log "sqs: npm install local-aws-sqs@2.0.2"
    ( cd "$STATE/sqs" && { [ -f package.json ] || echo '{"private":true}' > package.json; } \
      && npm install --no-audit --no-fund --loglevel=error local-aws-sqs@2.0.2 </dev/null >"$STATE/sqs/npm.log" 2>&1 ) \
      || die "npm install local-aws-sqs failed: $(tail -5 "$STATE/sqs/npm.log")"
  fi
  write_sqs_shim
  # node finds local-aws-sqs next to the script
  setsid node "$STATE/sqs/sqs-server.js" </dev/null >"$STATE/sqs.log" 2>&1 &
  echo $! > "$STATE/sqs.pid"
  wait_until 15 "sqs http://127.0.0.1:9324" sqs_ok || die "sqs did not start: $(tail -5 "$STATE/sqs.log")"
}

cmd_up() {
  local failed=() rmq="" s down=()
  # servers that already answer need nothing from root: a user who is not root can run the tests against them
  for s in "${WANT[@]}"; do "${s}_ok" || down+=("$s"); done
  if [ ${#down[@]} -eq 0 ]; then
    log "already running: ${WANT[*]}"
    print_connection_strings
    return 0
  fi
  need_root
  mkdir -p "$STATE"
  install_missing
  # the slow one (rabbitmq, ~7 s) starts in the background; the others meanwhile, one at a time.
  # Each start runs as its own job so that `set -e` holds inside it and a failure is reported, not fatal at once.
  if want rabbitmq; then start_rabbitmq </dev/null & rmq=$!; fi
  for s in postgres redis nats sqs; do
    if want "$s"; then "start_$s" </dev/null & wait $! || failed+=("$s"); fi
  done
  if [ -n "$rmq" ]; then wait "$rmq" || failed+=(rabbitmq); fi
  [ ${#failed[@]} -eq 0 ] || die "failed to start: ${failed[*]} (logs in $STATE)"
  log "up: ${WANT[*]} (state in $STATE)"
  print_connection_strings
  return 0
}

print_connection_strings() {
  echo "Connection strings:"
  want postgres && echo "  HERALD_TEST_POSTGRES=Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald"
  want redis    && echo "  HERALD_TEST_REDIS=127.0.0.1:6379"
  want rabbitmq && echo "  HERALD_TEST_RABBITMQ=amqp://guest:guest@127.0.0.1:5672/   (management http://127.0.0.1:15672/ guest:guest, stream 127.0.0.1:5552)"
  want nats     && echo "  HERALD_TEST_NATS=nats://127.0.0.1:4222   (JetStream; monitoring http://127.0.0.1:8222/)"
  want sqs      && echo "  HERALD_TEST_SQS=http://127.0.0.1:9324   (any access key/secret, region us-east-1)"
  return 0
}

# ================================================================== down
# alive PID : the process exists and is not a zombie waiting for its parent (init) to reap it
alive() { [ -r "/proc/$1/status" ] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
# stop_pidfile FILE NAME CMDLINE-PATTERN : SIGTERM the process in FILE if it still is NAME, wait up to 10 s
stop_pidfile() {
  local f=$1 name=$2 pat=$3 pid
  [ -f "$f" ] || { log "$name: not running (no pid file)"; return 0; }
  pid=$(cat "$f")
  if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pat"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then log "$name: pid $pid ignored SIGTERM, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
    log "$name stopped (pid $pid)"
  else
    log "$name: not running"
  fi
  rm -f "$f"
}

cmd_down() {
  need_root
  if want sqs; then
    stop_pidfile "$STATE/sqs.pid" sqs sqs-server.js
    if [ $PURGE = 1 ]; then rm -f "$STATE/sqs.log"; fi
  fi
  if want nats; then
    stop_pidfile "$STATE/nats.pid" nats nats-server
    if [ $PURGE = 1 ]; then rm -rf "$STATE/nats" "$STATE/nats.log"; log "nats: JetStream store purged"; fi
  fi
  if want rabbitmq && command -v rabbitmqctl >/dev/null; then
    if port_open 5672 || port_open 25672; then
      # with the node's pid file, rabbitmqctl stop waits until the OS process has exited
      local pidf=/var/lib/rabbitmq/mnesia/rabbit@localhost.pid rc=0
      if [ -f "$pidf" ]; then rabbitmqctl -q stop "$pidf" </dev/null >/dev/null 2>&1 || rc=$?
      else rabbitmqctl -q stop </dev/null >/dev/null 2>&1 || rc=$?; fi
      if [ $rc = 0 ]; then log "rabbitmq stopped"; else log "rabbitmq: rabbitmqctl stop failed ($rc)"; fi
    else
      log "rabbitmq: not running"
    fi
    # epmd outlives the node; end it so that the next start is clean
    if command -v epmd >/dev/null && epmd -names >/dev/null 2>&1; then epmd -kill >/dev/null 2>&1 && log "epmd stopped"; fi
    if [ $PURGE = 1 ]; then
      rm -rf /var/lib/rabbitmq/mnesia/rabbit@localhost /var/lib/rabbitmq/mnesia/rabbit@localhost-* "$STATE/rabbitmq-start.log"
      log "rabbitmq: node data purged"
    fi
  fi
  if want redis && command -v redis-cli >/dev/null; then
    if redis_ok; then
      redis-cli -h 127.0.0.1 -p 6379 shutdown nosave >/dev/null 2>&1 || true
      for _ in $(seq 1 50); do redis_ok || break; sleep 0.1; done
      log "redis stopped"
    else
      log "redis: not running"
    fi
    rm -f "$STATE/redis/redis.pid"
    if [ $PURGE = 1 ]; then rm -rf "$STATE/redis"; fi
  fi
  if want postgres && command -v pg_ctlcluster >/dev/null; then
    if [ $PURGE = 1 ] && pg_isready -q -h 127.0.0.1 -p 5432; then
      (cd / && runuser -u postgres -- psql -X -q -c 'DROP DATABASE IF EXISTS herald WITH (FORCE)' -c 'DROP ROLE IF EXISTS herald' </dev/null) \
        && log "postgres: database herald and role herald dropped"
    fi
    if pg_lsclusters -h 2>/dev/null | awk '$1 == "15" && $2 == "main" && $4 == "online" { f = 1 } END { exit !f }'; then
      pg_ctlcluster 15 main stop -m fast </dev/null && log "postgres stopped"
    else
      log "postgres: not running"
    fi
    if [ $PURGE = 1 ]; then rm -f "$STATE"/postgres-*.log; fi
  fi
  if [ $PURGE = 1 ]; then rm -f "$STATE/apt.log"; fi

  # wait until the ports are free, so that an `up` right after starts cleanly
  local ports=() busy="" p
  if want sqs; then ports+=(9324); fi
  if want nats; then ports+=(4222 8222); fi
  if want rabbitmq; then ports+=(5672 15672 5552 25672 4369); fi
  if want redis; then ports+=(6379); fi
  if want postgres; then ports+=(5432); fi
  for _ in $(seq 1 50); do
    busy=""; for p in "${ports[@]}"; do port_open "$p" && busy="$busy $p"; done
    [ -z "$busy" ] && break; sleep 0.2
  done
  [ -z "$busy" ] || log "WARNING: still listening on 127.0.0.1:$busy"
  log "down: ${WANT[*]}"
}

case "$CMD" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
