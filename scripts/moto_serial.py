"""Runs moto's server like `moto_server`, but handling one request at a time.

moto's threaded server evaluates DynamoDB condition expressions and applies updates without
per-item locking, so two racing conditional writes can both succeed — the lease-store
conformance race cases caught it. DynamoDB applies each conditional write atomically; serving
requests one at a time restores that. moto did not scale with concurrency anyway.

Usage: python moto_serial.py <host> <port>
"""
import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

host, port = sys.argv[1], int(sys.argv[2])
app = DomainDispatcherApplication(create_backend_app)
app.debug = True
run_simple(host, port, app, threaded=False, request_handler=MotoRequestHandler)
