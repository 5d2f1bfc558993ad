"""Python's etcd3 client (grpcio) against raftkv's mutual TLS: with the
CA and a client certificate it writes and reads; without a client
certificate it is refused, and nothing it sent was applied. Run by
tests/tls.rs as `tls.py HOST:PORT CA CERT KEY`."""

import sys

import etcd3

from checks import check


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    ca, cert, key = sys.argv[2], sys.argv[3], sys.argv[4]
    good = etcd3.client(host=host, port=int(port), timeout=10, ca_cert=ca, cert_cert=cert, cert_key=key)
    good.put("py-tls/a", "1")
    value, _ = good.get("py-tls/a")
    check(value == b"1", "put and get over mutual TLS")

    anonymous = etcd3.client(host=host, port=int(port), timeout=5, ca_cert=ca)
    try:
        anonymous.put("py-tls/b", "2")
        check(False, "a client without a certificate was refused")
    except Exception as e:  # grpcio reports the refused handshake as UNAVAILABLE
        check("py-tls/b" not in str(e), f"a client without a certificate was refused ({type(e).__name__})")
    value, _ = good.get("py-tls/b")
    check(value is None, "the refused client's put was not applied")
    print("all passed", flush=True)


if __name__ == "__main__":
    main()
