#!/usr/bin/env bash
# Installs what this machine lacks: with no argument, what building and
# running Sluice needs (`make dev`); with --test, also what the tests need
# (`make test`): cmocka, clang for the fuzz targets, a JDK and Maven for the
# tests' Cassandra, the Python test tools, chromium for the dashboard's
# browser test, and the SQS clients of the tests (boto3, the AWS CLI, the
# JavaScript and Go SDKs). Debian packages with apt-get, Python packages with
# pip, npm packages and Go modules into caches outside the repository.
# Idempotent and quiet when nothing is missing.
set -euo pipefail
test_deps=0
[ "${1:-}" = "--test" ] && test_deps=1

debs=(build-essential pkg-config libjansson-dev libsqlite3-dev libssl-dev liblz4-dev curl)
# python3-boto3: Debian's older botocore, which speaks SQS's query protocol
# (tests/api/test_sqs_query.py runs it under /usr/bin/python3).
# libcurl4-openssl-dev: for pip to build pycurl where no wheel fits (Celery's
# SQS transport, below).
# prometheus and graphite-carbon: the real Prometheus server that scrapes GET
# /metrics and the real carbon receiver Sluice pushes to, in
# tests/api/test_metrics.py. podman, runc and mmdebstrap build and run the
# container image of deploy/Dockerfile, systemd's systemd-analyze checks the
# unit (tests/api/test_deploy.py). chromium and chromium-driver: the real
# browser that tests/api/test_dashboard.py drives, headless, through Selenium
# (below), on the dashboard.
[ $test_deps = 1 ] && debs+=(libcmocka-dev python3 python3-pip clang python3-boto3 libcurl4-openssl-dev prometheus
    graphite-carbon podman runc mmdebstrap systemd chromium chromium-driver)
missing=()
for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# The tests' Cassandra (scripts/cassandra.sh) runs on a JDK 17 and fetches
# its jars with mvn; any java 17+ and mvn on the PATH will do.
if [ $test_deps = 1 ]; then
    command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
    command -v mvn >/dev/null || missing+=(maven)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}" >&2
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[ $test_deps = 1 ] || exit 0
pyneed=()
python3 -c 'import pytest' 2>/dev/null || pyneed+=(pytest)
python3 -c 'import requests' 2>/dev/null || pyneed+=(requests)
python3 -c 'import yaml' 2>/dev/null || pyneed+=(pyyaml)
python3 -c 'import botocore' 2>/dev/null || pyneed+=(botocore)
# SQS: boto3 with the JSON protocol (botocore 1.34 and later) and the AWS CLI.
python3 -c 'import boto3, botocore, sys; sys.exit(tuple(map(int, botocore.__version__.split(".")[:2])) < (1, 34))' \
    2>/dev/null || pyneed+=("boto3>=1.34")
command -v aws >/dev/null 2>&1 || pyneed+=(awscli)
# Selenium 4 (Service, ChromeOptions) for tests/api/test_dashboard.py, which
# points it at Debian's chromium and chromedriver (above).
python3 -c 'import selenium, sys; sys.exit(int(selenium.__version__.split(".")[0]) < 4)' 2>/dev/null ||
    pyneed+=("selenium>=4")
# Celery with kombu's SQS transport (boto3, and pycurl for its long polls)
# for tests/api/test_sqs_celery.py; pinned. PyPI's pycurl is a wheel with its
# own libcurl; where pip must build it instead, libcurl4-openssl-dev (above)
# has what that needs.
python3 -c 'import celery, kombu, pycurl, sys; sys.exit((celery.__version__, kombu.__version__) != ("5.7.0", "5.7.0"))' \
    2>/dev/null || pyneed+=("celery==5.7.0" "kombu[sqs]==5.7.0")
# The AWS SDK for JavaScript v3 and sqs-consumer for the SQS tests, from npm,
# into a cache outside the repository (tests/api/test_sqs_js.py); pinned, as
# later SDK releases need a newer node than Debian's.
node_dir=${SLUICE_NODE_MODULES:-$HOME/.cache/sluice-node/node_modules}
if [ ! -d "$node_dir/sqs-consumer" ] || [ ! -d "$node_dir/@aws-sdk/client-sqs" ]; then
    command -v npm >/dev/null 2>&1 || {
        sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq nodejs npm >/dev/null
    }
    mkdir -p "$(dirname "$node_dir")"
    echo "deps: npm installing @aws-sdk/client-sqs sqs-consumer into $(dirname "$node_dir")" >&2
    (cd "$(dirname "$node_dir")" && { [ -f package.json ] || echo '{"private": true}' >package.json; } &&
        npm install -q --no-audit --no-fund @aws-sdk/client-sqs@3.1178.0 sqs-consumer@14.2.8 >/dev/null)
fi
# The AWS SDK for Go v2, for tests/api/go/sqs_smoke (the Go module proxy).
if ! command -v go >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq golang-go >/dev/null
fi
(cd "$(dirname "$0")/../tests/api/go/sqs_smoke" && go mod download) ||
    echo "deps: could not fetch the Go modules of tests/api/go/sqs_smoke" >&2
# Property-based tests of the API from its OpenAPI document; pinned, since
# its checks and generation change between releases.
python3 -c 'import schemathesis, sys; sys.exit(schemathesis.__version__ != "4.32.5")' 2>/dev/null ||
    pyneed+=(schemathesis==4.32.5)
if [ ${#pyneed[@]} -gt 0 ]; then
    echo "deps: pip installing ${pyneed[*]}" >&2
    python3 -m pip install -q "${pyneed[@]}" 2>/dev/null ||
        python3 -m pip install -q --break-system-packages "${pyneed[@]}"
fi
