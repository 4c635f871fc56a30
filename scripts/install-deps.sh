#!/usr/bin/env bash
# Checks for the tools Tidewater's build, demo and tests need, and installs the missing
# ones from Debian's packages when run as root (CI machines, fresh developer machines).
#   Rust (cargo), a C toolchain (gcc, make, perl: librdkafka is built from source),
#   Java 17+ and Maven (the local Kafka broker), curl, OpenSSL's headers (librdkafka's
#   TLS), the openssl tool (the secured test broker's certificates), Prometheus with
#   promtool (tests/dashboards.rs runs the dashboards' queries and the alert rules on them),
#   Python 3 with venv (Schemathesis, which scripts/schemathesis.sh installs from PyPI
#   into a virtual environment, and the Python client example), and Node.js with npm (the
#   Node client example; scripts/examples.sh installs the packages of both examples),
#   and Chromium (the browser test of the web console, scripts/console-test.sh, which
#   installs playwright-core from npm and drives Debian's Chromium with it).
set -euo pipefail

missing=()
command -v cc >/dev/null || missing+=(gcc)
command -v make >/dev/null || missing+=(make)
command -v perl >/dev/null || missing+=(perl)
command -v curl >/dev/null || missing+=(curl)
command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || missing+=(maven)
[[ -e /usr/include/zlib.h ]] || missing+=(zlib1g-dev)
[[ -e /usr/include/openssl/ssl.h ]] || missing+=(libssl-dev)
command -v openssl >/dev/null || missing+=(openssl)
command -v pkg-config >/dev/null || missing+=(pkg-config)
{ command -v prometheus && command -v promtool; } >/dev/null || missing+=(prometheus)
command -v python3 >/dev/null || missing+=(python3)
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
[[ -x /usr/bin/chromium ]] || missing+=(chromium)

if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "install-deps.sh: installing ${missing[*]}" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "install-deps.sh: please install: ${missing[*]}" >&2
    exit 1
  fi
fi
command -v cargo >/dev/null || { echo "install-deps.sh: Rust is required (https://rustup.rs)" >&2; exit 1; }
