#!/usr/bin/env bash
# cassandra.sh: run a throwaway single-node Apache Cassandra for tests and dev.
#
#   scripts/cassandra.sh start [--auth] [--ssl] [--port N]   fetch jars if needed, start, wait for CQL
#     (--ssl: TLS only on the native port, with a self-signed certificate for
#     the node's address made by keytool; clients verify it with RUN/conf/ca.pem)
#   scripts/cassandra.sh stop                        kill by recorded PID and wait
#   scripts/cassandra.sh status                      running or not, PID, RSS, port, address
#   scripts/cassandra.sh cqlsh-check [--port N]      OPTIONS -> SUPPORTED over a raw socket
#   scripts/cassandra.sh fetch                       only download the jars
#   scripts/cassandra.sh free-port [--address A,B,..]  print a native port whose storage port is free
#     too, on every address given (default: the node's address, 127.0.0.1)
#
# Every command takes --run-dir DIR (or CASSANDRA_RUN_DIR) and --heap SIZE
# (or CASSANDRA_HEAP). start is idempotent: on a run dir whose node is
# already running it only prints that node's port (a different --port is an
# error). start prints "port N" on stdout once CQL answers, so scripts can
# read it; status prints it too. A run dir that held a stopped node starts
# again on its data and on the port it had unless --port says otherwise,
# which is how the fault tests bring a node back.
#
# Several nodes on one machine (tests/cassandra/cluster.py): each node has
# its own run dir and its own loopback address (Linux answers all of 127/8
# without an alias), and all of them use the same native port and storage
# port (native + 1000), since each binds only its own address. No JMX port
# is opened (no cassandra.jmx.*.port property is set), so nothing else can
# clash. Options of start, remembered in the run dir like the port, so that
# a plain `start --run-dir DIR` brings a stopped node back as it was:
#   --address A          listen_address and rpc_address (127.0.0.1); cqlsh-check
#                        and free-port talk to / bind this address too
#   --seeds "A:P,..."    the seed list (default: the node itself, A:storage port)
#   --no-bootstrap       auto_bootstrap: false, for nodes that join a fresh,
#                        empty cluster together (nothing to stream)
#   --initial-token "T1,T2,..."  explicit tokens (num_tokens = their count)
# Token choice: a lone node keeps num_tokens 16 with the allocator
# (allocate_tokens_for_local_replication_factor: 1). A node given
# --no-bootstrap or --initial-token never uses the allocator: two nodes
# joining at once would see the same ring and get the same tokens from it.
# With --no-bootstrap and no --initial-token it gets 16 random tokens.
#
# The release is org.apache.cassandra:cassandra-all from Maven Central, with
# its runtime dependencies, copied by mvn into a cache outside the repo
# (${SLUICE_CACHE:-$HOME/.cache/sluice}/cassandra-<ver>/lib). The node runs on
# the machine's JDK 17 with the flags Cassandra's conf/jvm17-server.options
# uses. Its data, logs and PID live in a run dir (default $SLUICE_CACHE/run).
#
# Environment: CASSANDRA_VERSION (5.0.9), CASSANDRA_PORT (9042), SLUICE_CACHE,
# CASSANDRA_RUN_DIR, CASSANDRA_HEAP (1g), CASSANDRA_START_TIMEOUT (180).
set -euo pipefail

VER="${CASSANDRA_VERSION:-5.0.9}"
CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"
HOME_DIR="$CACHE/cassandra-$VER"
LIB="$HOME_DIR/lib"
RUN="${CASSANDRA_RUN_DIR:-$CACHE/run}"
PORT="${CASSANDRA_PORT:-9042}"
HEAP="${CASSANDRA_HEAP:-1g}"
TIMEOUT="${CASSANDRA_START_TIMEOUT:-180}"
AUTH=0
SSL=0
PORT_GIVEN=0
ADDRESS=""      # --address, else the run dir's recorded one, else 127.0.0.1
SEEDS=""        # --seeds, else the recorded ones, else ADDRESS:storage port
NO_BOOTSTRAP="" # 1 with --no-bootstrap (or recorded)
TOKENS=""       # --initial-token (or recorded)
[ -n "${CASSANDRA_PORT:-}" ] && PORT_GIVEN=1

die() { echo "cassandra.sh: $*" >&2; exit 1; }

fetch() {
    if [ -f "$LIB/.complete" ]; then return 0; fi
    command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
    mkdir -p "$LIB"
    # A throwaway pom whose only dependency is the release: copy-dependencies
    # then resolves exactly the runtime closure Maven Central declares.
    cat >"$HOME_DIR/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>sluice</groupId>
  <artifactId>cassandra-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.cassandra</groupId>
      <artifactId>cassandra-all</artifactId>
      <version>$VER</version>
    </dependency>
  </dependencies>
</project>
EOF
    echo "cassandra.sh: fetching cassandra-all $VER and its dependencies into $LIB" >&2
    (cd "$HOME_DIR" && mvn -q -B dependency:copy-dependencies -DincludeScope=runtime \
        -DoutputDirectory="$LIB") || die "mvn dependency:copy-dependencies failed"
    ls "$LIB"/cassandra-all-"$VER".jar >/dev/null || die "cassandra-all-$VER.jar missing after fetch"
    touch "$LIB/.complete"
}

write_config() {
    local authn="AllowAllAuthenticator" authz="AllowAllAuthorizer" roles="CassandraRoleManager"
    if [ "$AUTH" = 1 ]; then
        authn="PasswordAuthenticator"; authz="CassandraAuthorizer"
    fi
    mkdir -p "$RUN"/{data,commitlog,saved_caches,hints,cdc_raw,logs,conf}
    local storage_port=$((PORT + 1000))
    local seeds="${SEEDS:-$ADDRESS:$storage_port}"
    # Tokens: see the header. The allocator only for a lone node, as before.
    local tokens="num_tokens: 16
allocate_tokens_for_local_replication_factor: 1"
    if [ -n "$TOKENS" ]; then
        local ntok; ntok=$(echo "$TOKENS" | tr ',' '\n' | grep -c .)
        tokens="num_tokens: $ntok
initial_token: $TOKENS"
    elif [ "$NO_BOOTSTRAP" = 1 ]; then
        tokens="num_tokens: 16"
    fi
    local bootstrap=true
    [ "$NO_BOOTSTRAP" = 1 ] && bootstrap=false
    if [ "$SSL" = 1 ] && [ ! -f "$RUN/conf/keystore.p12" ]; then
        command -v keytool >/dev/null || die "keytool not found (it comes with the JDK)"
        local san="IP:$ADDRESS,DNS:localhost"
        [ "$ADDRESS" != 127.0.0.1 ] && san="$san,IP:127.0.0.1"
        keytool -genkeypair -alias node -keyalg RSA -keysize 2048 -validity 3650 -dname "CN=$ADDRESS" \
            -ext "SAN=$san" -keystore "$RUN/conf/keystore.p12" -storetype PKCS12 \
            -storepass sluicetest -keypass sluicetest >/dev/null 2>&1 || die "keytool -genkeypair failed"
        keytool -exportcert -rfc -alias node -keystore "$RUN/conf/keystore.p12" -storepass sluicetest \
            -file "$RUN/conf/ca.pem" >/dev/null 2>&1 || die "keytool -exportcert failed"
    fi
    cat >"$RUN/conf/cassandra.yaml" <<EOF
cluster_name: 'Sluice Test Cluster'
$tokens
auto_bootstrap: $bootstrap
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
authenticator: $authn
authorizer: $authz
role_manager: $roles
data_file_directories:
  - $RUN/data
commitlog_directory: $RUN/commitlog
saved_caches_directory: $RUN/saved_caches
hints_directory: $RUN/hints
cdc_raw_directory: $RUN/cdc_raw
commitlog_sync: periodic
commitlog_sync_period: 10000ms
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "$seeds"
listen_address: $ADDRESS
rpc_address: $ADDRESS
storage_port: $storage_port
native_transport_port: $PORT
start_native_transport: true
endpoint_snitch: SimpleSnitch
disk_failure_policy: stop
commit_failure_policy: stop
# A mutation may be half a commit log segment: 64 MiB segments and frames let
# the store contract's 16 MiB values through (the defaults stop just short).
commitlog_segment_size: 64MiB
native_transport_max_frame_size: 64MiB
# Sluice leases and acks with lightweight transactions: Paxos v2 (Cassandra
# 4.1+) does them in fewer round trips and copes better with contention.
paxos_variant: v2
EOF
    if [ "$SSL" = 1 ]; then
        cat >>"$RUN/conf/cassandra.yaml" <<EOF
client_encryption_options:
  enabled: true
  optional: false
  keystore: $RUN/conf/keystore.p12
  keystore_password: sluicetest
  store_type: PKCS12
  require_client_auth: false
EOF
    fi
    cat >"$RUN/conf/logback.xml" <<EOF
<configuration scan="false">
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>$RUN/logs/system.log</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
EOF
}

# A zombie (a killed node its parent has not reaped yet) counts as gone.
proc_alive() { kill -0 "$1" 2>/dev/null && [ "$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null)" != Z ]; }
pid_alive() { [ -f "$RUN/cassandra.pid" ] && proc_alive "$(cat "$RUN/cassandra.pid")"; }

# 512m, or the whole heap when it is smaller (the JVM refuses -Xms > -Xmx).
initial_heap() {
    local mb
    case "$HEAP" in
    *[gG]) mb=$(( ${HEAP%[gG]} * 1024 )) ;;
    *[mM]) mb=${HEAP%[mM]} ;;
    *) echo "$HEAP"; return ;;
    esac
    if [ "$mb" -lt 512 ]; then echo "${mb}m"; else echo 512m; fi
}

# The port the node in $RUN was started with, if any.
recorded_port() { cat "$RUN/port" 2>/dev/null || true; }
# The same for the address, seeds, --no-bootstrap and the tokens.
recorded() { cat "$RUN/$1" 2>/dev/null || true; }

# A native port in 20000-28999 that is free on every address of the
# comma-separated list $ADDRESS, and whose storage port (native + 1000) is
# free there too. Binding a specific address also fails when another
# process holds the port on 0.0.0.0.
free_port() {
    python3 - "$ADDRESS" <<'EOF'
import random, socket, sys
addrs = [a for a in sys.argv[1].split(",") if a]
def free(p):
    for a in addrs:
        s = socket.socket()
        try:
            s.bind((a, p))
        except OSError:
            return False
        finally:
            s.close()
    return True
for _ in range(200):
    p = random.randrange(20000, 29000)
    if free(p) and free(p + 1000):
        print(p)
        break
else:
    raise SystemExit("no free port pair found")
EOF
}

# Sends OPTIONS (v4, stream 0) on the native port and expects SUPPORTED
# (opcode 0x06). Prints the options map on success.
cql_check() {
    python3 - "$PORT" "$SSL" "$ADDRESS" <<'EOF'
import socket, ssl, struct, sys
port = int(sys.argv[1])
try:
    s = socket.create_connection((sys.argv[3], port), timeout=3)
    if sys.argv[2] == "1":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        s = ctx.wrap_socket(s)
    s.sendall(bytes([4, 0, 0, 0, 5]) + struct.pack(">i", 0))
    buf = b""
    while len(buf) < 9 or len(buf) < 9 + struct.unpack(">i", buf[5:9])[0]:
        d = s.recv(65536)
        if not d:
            sys.exit(1)
        buf += d
    if buf[4] != 6:
        sys.exit(1)
    body, off = buf[9:], 2
    out = []
    for _ in range(struct.unpack(">H", body[:2])[0]):
        kl = struct.unpack(">H", body[off:off + 2])[0]; off += 2
        k = body[off:off + kl].decode(); off += kl
        n = struct.unpack(">H", body[off:off + 2])[0]; off += 2
        vs = []
        for _ in range(n):
            vl = struct.unpack(">H", body[off:off + 2])[0]; off += 2
            vs.append(body[off:off + vl].decode()); off += vl
        out.append("%s=%s" % (k, ",".join(vs)))
    print("SUPPORTED " + " ".join(out))
except OSError:
    sys.exit(1)
EOF
}

start() {
    if pid_alive; then
        local rp; rp=$(recorded_port)
        if [ "$PORT_GIVEN" = 1 ] && [ -n "$rp" ] && [ "$rp" != "$PORT" ]; then
            die "a node already runs in $RUN on port $rp, not $PORT"
        fi
        echo "cassandra.sh: already running (pid $(cat "$RUN/cassandra.pid"), $ADDRESS, native port ${rp:-$PORT})" >&2
        echo "port ${rp:-$PORT}"
        return 0
    fi
    # A stopped node starts again on the port it had, unless told otherwise.
    if [ "$PORT_GIVEN" = 0 ] && [ -n "$(recorded_port)" ]; then PORT=$(recorded_port); fi
    command -v java >/dev/null || die "java not found (apt-get install openjdk-17-jre-headless)"
    fetch
    write_config
    local jamm agent=()
    jamm=$(ls "$LIB"/jamm-*.jar 2>/dev/null | head -1 || true)
    [ -n "$jamm" ] && agent=("-javaagent:$jamm")
    # The JPMS list is the one Cassandra 5.0 ships in conf/jvm17-server.options.
    local jvm=(
        "-Xms$(initial_heap)" "-Xmx$HEAP" -Xss256k -XX:+UseG1GC -XX:+ParallelRefProcEnabled
        -XX:MaxTenuringThreshold=1 -XX:G1HeapRegionSize=16m -XX:MaxGCPauseMillis=300
        -XX:+HeapDumpOnOutOfMemoryError -XX:HeapDumpPath="$RUN/logs"
        -Djdk.attach.allowAttachSelf=true
        --add-exports java.base/jdk.internal.misc=ALL-UNNAMED
        --add-exports java.management.rmi/com.sun.jmx.remote.internal.rmi=ALL-UNNAMED
        --add-exports java.rmi/sun.rmi.registry=ALL-UNNAMED
        --add-exports java.rmi/sun.rmi.server=ALL-UNNAMED
        --add-exports java.sql/java.sql=ALL-UNNAMED
        --add-exports java.base/java.lang.ref=ALL-UNNAMED
        --add-exports jdk.unsupported/sun.misc=ALL-UNNAMED
        --add-exports jdk.compiler/com.sun.tools.javac.file=ALL-UNNAMED
        --add-exports jdk.attach/sun.tools.attach=ALL-UNNAMED
        --add-opens java.base/java.lang.module=ALL-UNNAMED
        --add-opens java.base/jdk.internal.loader=ALL-UNNAMED
        --add-opens java.base/jdk.internal.ref=ALL-UNNAMED
        --add-opens java.base/jdk.internal.reflect=ALL-UNNAMED
        --add-opens java.base/jdk.internal.math=ALL-UNNAMED
        --add-opens java.base/jdk.internal.module=ALL-UNNAMED
        --add-opens java.base/jdk.internal.util.jar=ALL-UNNAMED
        --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED
        --add-opens java.base/sun.nio.ch=ALL-UNNAMED
        --add-opens java.base/java.io=ALL-UNNAMED
        --add-opens java.base/java.lang.reflect=ALL-UNNAMED
        --add-opens jdk.compiler/com.sun.tools.javac=ALL-UNNAMED
        --add-opens java.base/java.lang=ALL-UNNAMED
        --add-opens java.base/java.util=ALL-UNNAMED
        -Dio.netty.tryReflectionSetAccessible=true
        -Dio.netty.allocator.useCacheForAllThreads=true
        -Dio.netty.allocator.maxOrder=11
        "${agent[@]}"
        -Dcassandra-foreground=yes
        -Dcassandra.config="file://$RUN/conf/cassandra.yaml"
        -Dcassandra.storagedir="$RUN"
        -Dcassandra.logdir="$RUN/logs"
        -Dlogback.configurationFile="file://$RUN/conf/logback.xml"
        -Dcassandra.skip_wait_for_gossip_to_settle=0
        -Dcassandra.ring_delay_ms=1000
        -Dcassandra.superuser_setup_delay_ms=0
        # The tests SIGKILL nodes on purpose. The segment being written at
        # the kill can end in a torn sync marker ("bad header ... invalid
        # CRC"), and Cassandra then refuses to start; with this it replays
        # up to the tear, as it does for the unsynced tail of any crash
        # (commitlog_sync periodic), which QUORUM covers from the replicas.
        -Dcassandra.commitlog.ignorereplayerrors=true
        -Djava.net.preferIPv4Stack=true
        -cp "$LIB/*"
        org.apache.cassandra.service.CassandraDaemon
    )
    local t0=$SECONDS
    echo "$PORT" >"$RUN/port"
    echo "$ADDRESS" >"$RUN/address"
    if [ -n "$SEEDS" ]; then echo "$SEEDS" >"$RUN/seeds"; else rm -f "$RUN/seeds"; fi
    if [ -n "$TOKENS" ]; then echo "$TOKENS" >"$RUN/initial-token"; else rm -f "$RUN/initial-token"; fi
    if [ "$NO_BOOTSTRAP" = 1 ]; then touch "$RUN/no-bootstrap"; else rm -f "$RUN/no-bootstrap"; fi
    nohup java "${jvm[@]}" >"$RUN/logs/stdout.log" 2>&1 </dev/null &
    echo $! >"$RUN/cassandra.pid"
    echo "cassandra.sh: started pid $! (cassandra-all $VER, $ADDRESS, native port $PORT, run dir $RUN)" >&2
    while ! cql_check >/dev/null 2>&1; do
        if ! pid_alive; then
            echo "cassandra.sh: java exited during startup; log tail:" >&2
            tail -n 25 "$RUN/logs/system.log" "$RUN/logs/stdout.log" | cut -c1-400 >&2 || true
            rm -f "$RUN/cassandra.pid"; exit 1
        fi
        if [ $((SECONDS - t0)) -ge "$TIMEOUT" ]; then
            echo "cassandra.sh: no CQL answer on $ADDRESS:$PORT after ${TIMEOUT}s; log tail:" >&2
            tail -n 25 "$RUN/logs/system.log" "$RUN/logs/stdout.log" | cut -c1-400 >&2 || true
            stop; exit 1
        fi
        sleep 1
    done
    echo "cassandra.sh: CQL up on $ADDRESS:$PORT after $((SECONDS - t0))s" >&2
    cql_check >&2
    echo "port $PORT"
}

stop() {
    if ! pid_alive; then echo "cassandra.sh: not running" >&2; rm -f "$RUN/cassandra.pid"; return 0; fi
    local pid; pid=$(cat "$RUN/cassandra.pid")
    kill "$pid"
    for _ in $(seq 1 60); do proc_alive "$pid" || break; sleep 1; done
    if proc_alive "$pid"; then kill -9 "$pid"; sleep 1; fi
    rm -f "$RUN/cassandra.pid"
    echo "cassandra.sh: stopped pid $pid" >&2
}

status() {
    if pid_alive; then
        local pid; pid=$(cat "$RUN/cassandra.pid")
        echo "running pid $pid rss_kb $(awk '/VmRSS/ {print $2}' "/proc/$pid/status") port $(recorded_port) address $ADDRESS"
    else
        echo "stopped"; return 3
    fi
}

cmd="${1:-}"; shift || true
while [ $# -gt 0 ]; do
    case "$1" in
    --auth) AUTH=1 ;;
    --ssl) SSL=1 ;;
    --port) PORT="$2"; PORT_GIVEN=1; shift ;;
    --run-dir) RUN="$2"; shift ;;
    --heap) HEAP="$2"; shift ;;
    --address) ADDRESS="$2"; shift ;;
    --seeds) SEEDS="$2"; shift ;;
    --no-bootstrap) NO_BOOTSTRAP=1 ;;
    --initial-token) TOKENS="$2"; shift ;;
    *) die "unknown option $1" ;;
    esac
    shift
done
# Without --port, a run dir's node is addressed on the port it was started
# with; the same for its address, seeds, tokens and --no-bootstrap.
if [ "$PORT_GIVEN" = 0 ] && [ -n "$(recorded_port)" ]; then PORT=$(recorded_port); fi
[ -n "$ADDRESS" ] || ADDRESS=$(recorded address)
[ -n "$ADDRESS" ] || ADDRESS=127.0.0.1
[ -n "$SEEDS" ] || SEEDS=$(recorded seeds)
[ -n "$TOKENS" ] || TOKENS=$(recorded initial-token)
[ -n "$NO_BOOTSTRAP" ] || { [ -f "$RUN/no-bootstrap" ] && NO_BOOTSTRAP=1; } || true
case "$cmd,$ADDRESS" in
free-port,*) ;;
*,*,*) die "--address takes one address (a list only for free-port)" ;;
esac
case "$cmd" in
start) start ;;
stop) stop ;;
status) status ;;
cqlsh-check) cql_check ;;
fetch) fetch ;;
free-port) free_port ;;
*) echo "usage: $0 start [--auth] [--ssl] [--port N] [--address A] [--seeds A:P,...] [--no-bootstrap]" \
        "[--initial-token T,...] | stop | status | cqlsh-check [--port N] | fetch | free-port [--address A,...]" \
        "(each with [--run-dir DIR] [--heap SIZE] [--address A])" >&2; exit 2 ;;
esac
