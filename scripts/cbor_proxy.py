"""CloudWatch protocol translator for the tests: aws-sdk-cloudwatch (>= 1.100) speaks Smithy
RPC v2 CBOR, which moto 5.2.5 does not understand. This proxy accepts RPC v2 CBOR requests,
forwards them to moto as awsJson1_0 (X-Amz-Target GraniteServiceVersion20100801.<Op>), and
re-encodes moto's answers as CBOR (timestamps as CBOR tag 1).

Usage: cbor_proxy.py <listen-port> <moto-url>
"""

import datetime
import json
import sys
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cbor2

TARGET = "GraniteServiceVersion20100801"


def to_json(value):
    """CBOR-decoded request -> JSON-able value (timestamps as epoch seconds, bytes as text)."""
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, cbor2.CBORTag) and value.tag == 1:
        return float(value.value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def to_cbor(value, key=""):
    """JSON reply -> CBOR-ready value: members named *Timestamp(s) become tag-1 timestamps."""
    if isinstance(value, dict):
        return {k: to_cbor(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [to_cbor(v, key) for v in value]
    if "Timestamp" in key and isinstance(value, (int, float)):
        return cbor2.CBORTag(1, float(value))
    if "Timestamp" in key and isinstance(value, str):
        try:
            return cbor2.CBORTag(1, datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        except ValueError:
            return value
    return value


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        sys.stderr.write("cbor-proxy: " + (fmt % args) + "\n")

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        operation = self.path.rstrip("/").rsplit("/", 1)[-1]
        body = to_json(cbor2.loads(raw)) if raw else {}
        headers = {
            "X-Amz-Target": f"{TARGET}.{operation}",
            "Content-Type": "application/x-amz-json-1.0",
        }
        for h in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if self.headers.get(h):
                headers[h] = self.headers[h]
        request = urllib.request.Request(
            UPSTREAM + "/", data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                status, text = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read()
        try:
            reply = json.loads(text) if text.strip() else {}
        except ValueError:
            reply = {"__type": "InternalFailure", "message": text.decode("utf-8", "replace")[:500]}
        if status >= 400 and "__type" in reply:
            reply["__type"] = reply["__type"].rsplit("#", 1)[-1]
        out = cbor2.dumps(to_cbor(reply))
        self.send_response(status)
        self.send_header("Content-Type", "application/cbor")
        self.send_header("smithy-protocol", "rpc-v2-cbor")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


if __name__ == "__main__":
    port, UPSTREAM = int(sys.argv[1]), sys.argv[2].rstrip("/")
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
