#!/usr/bin/env bash
# Runs every test: the C unit tests, the same under ASan/UBSan, and the
# black-box suites (pytest) against the real binary, first on the embedded
# store, then on a real Apache Cassandra that this script starts (and stops
# by PID at the end, whatever happens): the store contract suite, the whole
# black-box API suite, the crash test and tests/cassandra (several Sluice
# nodes, Cassandra faults). Prints a summary per suite and, last, one line
# "N passed, N failed, N skipped" that counts every test.
#
# Environment:
#   SLUICE_TEST_BACKENDS  "sqlite cassandra" (default) or one of them; a
#                         backend left out is reported, never silently passed
#   CASSANDRA_HEAP        heap of the test node (1g)
#   SLUICE_CACHE          where cassandra.sh caches the jars (~/.cache/sluice)
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0; failed=0; skipped=0
jobs=$(nproc 2>/dev/null || echo 2)
log=$(mktemp -d)
backends=${SLUICE_TEST_BACKENDS:-sqlite cassandra}
t_start=$SECONDS

# Every Cassandra node of the run (the shared one, and those tests start
# for themselves) lives in a run dir under $log/cassandra*: stop them all
# by PID on the way out, then remove the logs.
cleanup() {
    local pidf pid
    for pidf in "$log"/cassandra*/cassandra.pid "$log"/pytest-*/*/cassandra.pid; do
        [ -f "$pidf" ] || continue
        pid=$(cat "$pidf")
        kill -CONT "$pid" 2>/dev/null
        CASSANDRA_RUN_DIR=$(dirname "$pidf") scripts/cassandra.sh stop >/dev/null 2>&1 ||
            kill -9 "$pid" 2>/dev/null
    done
    rm -rf "$log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs one cmocka binary and adds its counts, test by test (see
# scripts/cmocka_count.py; a third argument, a list of tests, counts only
# those). A binary that crashes or prints no result counts as a failure, so
# a crash never passes silently. The output stays in $log/<binary>.<label>.txt.
# With a fourth argument "resolve", the listed tests were counted as skipped
# before: those that run now move from skipped to passed or failed.
run_cmocka() {
    local bin=$1 label=$2 only=${3:-} mode=${4:-} out="$log/$(basename "$1").$2.txt"
    local t0=$SECONDS
    "$bin" >"$out" 2>&1
    local rc=$?
    local p f s
    if [ -n "$only" ]; then
        read -r p f s < <(python3 scripts/cmocka_count.py "$out" --only "$only")
    else
        read -r p f s < <(python3 scripts/cmocka_count.py "$out")
    fi
    p=${p:-0}; f=${f:-1}; s=${s:-0}
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
    if [ "$p" -eq 0 ] && [ "$f" -eq 0 ] && [ "$s" -eq 0 ]; then f=1; fi
    echo "$label $(basename "$bin"): $p passed, $f failed, $s skipped ($((SECONDS - t0)) s)"
    if [ "$f" -ne 0 ]; then grep -vE '^\[ (RUN|      OK) ' "$out" | tail -n 40 | cut -c1-400; fi
    if [ "$mode" = resolve ]; then
        passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped - p - f))
        [ "$skipped" -ge 0 ] || skipped=0
    else
        passed=$((passed + p)); failed=$((failed + f)); skipped=$((skipped + s))
    fi
}

# Builds build/asan/sluice: the server under ASan/UBSan, with the lock check
# of util/fiber.h (every mutex a thread takes is counted, and a store-pool
# handler that parks holding one aborts the server).
asan_build() {
    make -s B=build/asan CFLAGS="-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer \
        -fno-sanitize-recover=all -DSL_LOCK_CHECK" LDFLAGS="-fsanitize=address,undefined \
        -Wl,--wrap=pthread_mutex_lock,--wrap=pthread_mutex_trylock,--wrap=pthread_mutex_unlock" build/asan/sluice
}

# Runs pytest on the given paths with the given label and adds its counts
# from the junit report. No report means pytest itself broke: one failure.
# Prints the skip reasons and what the tests recorded (record_property).
run_pytest() {
    local label=$1; shift
    local xml="$log/pytest-$label.xml"
    local t0=$SECONDS
    python3 -m pytest -q -p no:cacheprovider -rs -o junit_family=xunit1 --basetemp="$log/pytest-$label" \
        --junitxml="$xml" "$@"
    read -r pp pf ps < <(python3 - "$xml" <<'PY'
import sys, xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print(0, 1, 0); sys.exit()
suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
t = sum(int(s.get("tests", 0)) for s in suites)
f = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
sk = sum(int(s.get("skipped", 0)) for s in suites)
for s in suites:
    for case in s.iter("testcase"):
        for p in case.iter("property"):
            print(f"  measured ({p.get('name')}): {p.get('value')}", file=sys.stderr)
print(t - f - sk, f, sk)
PY
)
    echo "pytest ($label): $pp passed, $pf failed, $ps skipped in $((SECONDS - t0)) s"
    passed=$((passed + pp)); failed=$((failed + pf)); skipped=$((skipped + ps))
}

echo "== build"
if ! make -s -j"$jobs" all unit; then
    echo "build failed"; echo "0 passed, 1 failed"; exit 1
fi
echo "== C unit tests"
for t in build/tests/test_*; do [ -x "$t" ] && run_cmocka "$t" unit; done

echo "== C unit tests under ASan/UBSan"
if make -s -j"$jobs" check >"$log/san-build.txt" 2>&1; then
    for t in build/san/tests/test_*; do [ -x "$t" ] && ASAN_OPTIONS=detect_leaks=1 run_cmocka "$t" san; done
    # Every engine test again with its compare-and-sets through the
    # combiner, as on Cassandra: the embedded store answers them on its
    # writer thread, so the combiner's rounds start one another there.
    echo "== the engine's tests through the compare-and-set combiner, under ASan/UBSan"
    SLUICE_TEST_COMBINE=1 ASAN_OPTIONS=detect_leaks=1 run_cmocka build/san/tests/test_engine combined
else
    cat "$log/san-build.txt"; failed=$((failed + 1))
fi
echo "(C suites done at $((SECONDS - t_start)) s)"

echo "== fuzz corpora replayed under ASan/UBSan"
# One test per target: the committed corpus (every past finding included)
# runs once through the CQL frame decoder, the auth parsers and the whole
# HTTP surface.
if make -s fuzz-replay >"$log/fuzz.txt" 2>&1; then
    n=$(grep -c "Done [0-9]* runs" "$log/fuzz.txt")
    echo "fuzz replay: $n passed, 0 failed"
    passed=$((passed + n))
else
    tail -n 40 "$log/fuzz.txt"
    echo "fuzz replay: failed"
    failed=$((failed + 1))
fi

# The black-box suites: the same files on both backends. tests/cassandra is
# collected on SQLite too, where each of its tests is reported as skipped
# with its reason.
bb=(tests/api tests/crash tests/cassandra tests/history)

case " $backends " in
*" sqlite "*)
    echo "== black-box tests on the embedded store (pytest)"
    SLUICE_TEST_BACKEND=sqlite run_pytest sqlite "${bb[@]}"
    echo "(SQLite suites done at $((SECONDS - t_start)) s)"

    # The HTTP front again, with the server built under ASan/UBSan: the
    # hostile-client suites (framing, limits, slow senders, TLS), keep-alive
    # and shutdown, and the SQS protocol. A memory error in the parser or the connection handling
    # aborts the server and fails the tests; a leak at exit fails the tests
    # that check the exit status (shutdown, the connection limit).
    echo "== the HTTP front under ASan/UBSan (pytest, embedded store)"
    if asan_build >"$log/asan-build.txt" 2>&1; then
        ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 SLUICE_BIN=build/asan/sluice SLUICE_TEST_BACKEND=sqlite \
            run_pytest asan tests/api/test_http_front.py tests/api/test_https.py tests/api/test_keepalive.py \
            tests/api/test_shutdown.py tests/api/test_sqs_query.py tests/api/test_sqs.py
    else
        cat "$log/asan-build.txt"; failed=$((failed + 1))
    fi
    ;;
*) echo "== black-box tests on the embedded store: NOT RUN (SLUICE_TEST_BACKENDS=$backends)" ;;
esac

case " $backends " in
*" cassandra "*)
    echo "== Cassandra backend"
    cass_run="$log/cassandra"
    t0=$SECONDS
    cass_port=$(CASSANDRA_RUN_DIR="$cass_run" scripts/cassandra.sh free-port)
    if CASSANDRA_RUN_DIR="$cass_run" CASSANDRA_HEAP="${CASSANDRA_HEAP:-1g}" \
        scripts/cassandra.sh start --port "${cass_port:-29042}" >"$log/cassandra-start.txt" 2>&1; then
        echo "Cassandra up on 127.0.0.1:$cass_port in $((SECONDS - t0)) s ($(grep -o 'cassandra-all [0-9.]*' \
            "$log/cassandra-start.txt" | head -1))"
        export SLUICE_CASSANDRA_PORT=$cass_port

        echo "== C suites on Cassandra (the store contract, the CQL client)"
        # The unit binaries whose tests skipped without a node (the
        # Cassandra variant of the store contract in test_store, the live
        # tests of the CQL client) run again with SLUICE_CASSANDRA_PORT; only
        # the tests that skipped before are counted here, since the others
        # were counted above. The store contract must be among them.
        found=0
        for t in build/tests/test_*; do
            b=$(basename "$t")
            [ -x "$t" ] && [ -f "$log/$b.unit.txt" ] || continue
            python3 scripts/cmocka_count.py "$log/$b.unit.txt" --skipped >"$log/$b.skipped"
            [ -s "$log/$b.skipped" ] || continue
            case "$t" in */test_store) found=1 ;; esac
            run_cmocka "$t" cassandra "$log/$b.skipped"
        done
        if [ "$found" = 0 ]; then
            echo "cassandra: test_store has no group that runs on Cassandra (SLUICE_CASSANDRA_PORT)"
            failed=$((failed + 1))
        fi

        echo "== black-box tests on Cassandra (pytest)"
        SLUICE_TEST_BACKEND=cassandra run_pytest cassandra "${bb[@]}"

        # The paths that only Cassandra takes (requests parked on the CQL
        # client's callbacks, the combiner's rounds started by its answers,
        # puts waiting for the claimer) under ASan/UBSan: a memory error
        # aborts the server, a leak at exit fails the shutdown tests.
        echo "== Cassandra's asynchronous paths under ASan/UBSan (pytest)"
        if asan_build >"$log/asan-build-cassandra.txt" 2>&1; then
            ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 SLUICE_BIN=build/asan/sluice SLUICE_TEST_BACKEND=cassandra \
                run_pytest asan-cassandra tests/api/test_messages.py tests/api/test_parallel.py \
                tests/api/test_shutdown.py
        else
            cat "$log/asan-build-cassandra.txt"; failed=$((failed + 1))
        fi
        if ! CASSANDRA_RUN_DIR="$cass_run" scripts/cassandra.sh status >/dev/null; then
            echo "the shared Cassandra node died during the run; log tail:"
            tail -n 40 "$cass_run/logs/system.log" 2>/dev/null | cut -c1-400
            failed=$((failed + 1))
        fi
        t1=$SECONDS
        CASSANDRA_RUN_DIR="$cass_run" scripts/cassandra.sh stop
        echo "(Cassandra stopped in $((SECONDS - t1)) s; Cassandra suites done at $((SECONDS - t_start)) s)"

        # C tests that still skipped on the plain node need one with TLS and
        # PasswordAuthenticator (the CQL client's TLS + SASL PLAIN test): a
        # second node, started with --ssl --auth once the first has stopped.
        # Those tests were counted as skipped above; here they count as what
        # they do. A node that does not start is a failure.
        need_tls=0
        for t in build/tests/test_*; do
            b=$(basename "$t")
            [ -f "$log/$b.cassandra.txt" ] || continue
            python3 scripts/cmocka_count.py "$log/$b.cassandra.txt" --skipped | grep -Fxf "$log/$b.skipped" \
                >"$log/$b.tlslist"
            [ -s "$log/$b.tlslist" ] && need_tls=1
        done
        if [ "$need_tls" = 1 ]; then
            echo "== C suites on Cassandra with TLS and authentication"
            tls_run="$log/cassandra-tls"
            t1=$SECONDS
            tls_port=$(CASSANDRA_RUN_DIR="$tls_run" scripts/cassandra.sh free-port)
            if CASSANDRA_RUN_DIR="$tls_run" CASSANDRA_HEAP="${CASSANDRA_HEAP:-1g}" \
                scripts/cassandra.sh start --ssl --auth --port "${tls_port:-29043}" \
                >"$log/cassandra-tls-start.txt" 2>&1; then
                echo "Cassandra (TLS, auth) up on 127.0.0.1:$tls_port in $((SECONDS - t1)) s"
                unset SLUICE_CASSANDRA_PORT
                export SLUICE_CASSANDRA_TLS_PORT=$tls_port SLUICE_CASSANDRA_TLS_CA="$tls_run/conf/ca.pem"
                for t in build/tests/test_*; do
                    b=$(basename "$t")
                    [ -s "$log/$b.tlslist" ] && run_cmocka "$t" tls "$log/$b.tlslist" resolve
                done
                unset SLUICE_CASSANDRA_TLS_PORT SLUICE_CASSANDRA_TLS_CA
                CASSANDRA_RUN_DIR="$tls_run" scripts/cassandra.sh stop
            else
                echo "Cassandra with --ssl --auth did not start (counted as a failure); output and log tail:"
                tail -n 30 "$log/cassandra-tls-start.txt" | cut -c1-400
                tail -n 40 "$tls_run/logs/system.log" 2>/dev/null | cut -c1-400
                failed=$((failed + 1))
            fi
            echo "(TLS suites done at $((SECONDS - t_start)) s)"
        fi
    else
        echo "Cassandra did not start (counted as a failure); output and log tail:"
        tail -n 30 "$log/cassandra-start.txt" | cut -c1-400
        tail -n 40 "$cass_run/logs/system.log" 2>/dev/null | cut -c1-400
        failed=$((failed + 1))
    fi
    ;;
*) echo "== Cassandra backend: NOT RUN (SLUICE_TEST_BACKENDS=$backends)" ;;
esac

echo
echo "total time $((SECONDS - t_start)) s"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
