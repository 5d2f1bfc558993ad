"""What the client scripts share: a client for HOST:PORT, and `check`,
which prints `ok: ...` or `FAILED: ...` and exits non-zero on a failure."""

import sys

import etcd3


def client(endpoint):
    host, port = endpoint.rsplit(":", 1)
    return etcd3.client(host=host, port=int(port), timeout=10)


def check(cond, what):
    if not cond:
        print("FAILED: " + what, flush=True)
        sys.exit(1)
    print("ok: " + what, flush=True)
