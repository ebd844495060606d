# Sourced by scripts/test: starts the emulators on free loopback ports, exports their endpoints,
# and stops them on exit (even when tests fail).
#   KCL_KINESIS_ENDPOINT   kinesis-local, plain HTTP
#   KCL_KINESIS_TLS_ENDPOINT, KCL_KINESIS_CA   kinesis-local over TLS, and the CA to trust
#   KCL_DYNAMODB_ENDPOINT  moto server (DynamoDB)
#   KCL_CLOUDWATCH_ENDPOINT  moto CloudWatch behind scripts/cbor_proxy.py
#   KCL_SQS_ENDPOINT       moto server (SQS, the dead-letter queue tests)
TOOLS="$PWD/.tools"
EMULATOR_LOGS="${EMULATOR_LOGS:-$TOOLS/logs}"
EMULATOR_PIDS=()

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_for_port() {
  local name=$1 port=$2
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "$name did not open port $port; its log:" >&2
  tail -n 50 "$EMULATOR_LOGS/$name.log" >&2 || true
  return 1
}

stop_emulators() {
  for pid in "${EMULATOR_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
  done
  # kinesis-local can take 40 s to exit on SIGTERM (seen at the end of the test command);
  # nothing of it is kept, so after 5 s it is killed.
  for _ in $(seq 50); do
    local alive=0
    for pid in "${EMULATOR_PIDS[@]}"; do
      kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${EMULATOR_PIDS[@]}"; do
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  EMULATOR_PIDS=()
}

# A CA and a leaf certificate for 127.0.0.1/localhost (the bundled one has no subjectAltName,
# which rustls rejects). Clients trust the CA explicitly; verification is never disabled.
make_tls() {
  local dir="$TOOLS/tls"
  [ -f "$dir/server.json" ] && return 0
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=kcl-rs test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$dir/leaf.key" -out "$dir/leaf.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' >"$dir/leaf.ext"
  openssl x509 -req -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 3650 \
    -extfile "$dir/leaf.ext" -out "$dir/leaf.pem" 2>/dev/null
  openssl pkcs8 -topk8 -nocrypt -in "$dir/leaf.key" -out "$dir/leaf.pk8.pem"
  python3 -c 'import json,sys; d=sys.argv[1]; json.dump({"server": {"key": open(d+"/leaf.pk8.pem").read(), "cert": open(d+"/leaf.pem").read()}}, open(d+"/server.json", "w"))' "$dir"
}

start_emulators() {
  mkdir -p "$EMULATOR_LOGS"
  make_tls
  local kinesis_port kinesis_tls_port moto_port cloudwatch_port
  kinesis_port=$(free_port)
  cloudwatch_port=$(free_port)
  kinesis_tls_port=$(free_port)
  moto_port=$(free_port)
  KINESIS_MOCK_CERT_PATH="$TOOLS/tls/server.json" \
  KINESIS_MOCK_PLAIN_PORT="$kinesis_port" KINESIS_MOCK_TLS_PORT="$kinesis_tls_port" LOG_LEVEL=WARN \
  SHARD_LIMIT=100000 CREATE_STREAM_DURATION=0ms DELETE_STREAM_DURATION=0ms SPLIT_SHARD_DURATION=0ms MERGE_SHARDS_DURATION=0ms \
  UPDATE_SHARD_COUNT_DURATION=0ms REGISTER_STREAM_CONSUMER_DURATION=0ms DEREGISTER_STREAM_CONSUMER_DURATION=0ms \
    node "$TOOLS/node/node_modules/kinesis-local/main.js" >"$EMULATOR_LOGS/kinesis-local.log" 2>&1 &
  EMULATOR_PIDS+=($!)
  # One request at a time: moto's threaded server does not apply conditional writes atomically.
  "$TOOLS/moto-venv/bin/python" scripts/moto_serial.py 127.0.0.1 "$moto_port" >"$EMULATOR_LOGS/moto.log" 2>&1 &
  EMULATOR_PIDS+=($!)
  wait_for_port kinesis-local "$kinesis_port"
  wait_for_port kinesis-local "$kinesis_tls_port"
  wait_for_port moto "$moto_port"
  # aws-sdk-cloudwatch speaks RPC v2 CBOR; moto speaks JSON: translate in between.
  "$TOOLS/moto-venv/bin/python" scripts/cbor_proxy.py "$cloudwatch_port" "http://127.0.0.1:$moto_port" \
    >"$EMULATOR_LOGS/cbor-proxy.log" 2>&1 &
  EMULATOR_PIDS+=($!)
  wait_for_port cbor-proxy "$cloudwatch_port"
  export KCL_CLOUDWATCH_ENDPOINT="http://127.0.0.1:$cloudwatch_port"
  export KCL_KINESIS_ENDPOINT="http://127.0.0.1:$kinesis_port"
  export KCL_KINESIS_TLS_ENDPOINT="https://localhost:$kinesis_tls_port"
  export KCL_KINESIS_CA="$TOOLS/tls/ca.pem"
  export KCL_DYNAMODB_ENDPOINT="http://127.0.0.1:$moto_port"
  # moto serves every service on one port; SQS is the dead-letter queue tests' destination.
  export KCL_SQS_ENDPOINT="http://127.0.0.1:$moto_port"
  # Requests must be signed; the emulators accept any credentials.
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}" AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
  export AWS_REGION="${AWS_REGION:-us-east-1}"
  echo "emulators: kinesis-local $KCL_KINESIS_ENDPOINT, moto $KCL_DYNAMODB_ENDPOINT (logs in $EMULATOR_LOGS)"
}
