"""Python's etcd3 client (0.12) against raftkv: leases (grant, a key under
one, time-to-live and keys through another member, refresh, revoke, expiry)
and the client's lock recipe (held, seen held elsewhere, released, taken again).
Run by tests/client_libraries.rs as `leases.py HOST:PORT HOST:PORT` (two
members). Prints `ok: ...` per check and exits non-zero on the first
failure."""

import sys
import time

from checks import check, client


def main():
    a, b = client(sys.argv[1]), client(sys.argv[2])

    lease = a.lease(30)
    check(lease.granted_ttl == 30, "a lease is granted with its TTL")
    a.put("svc/py", "up", lease=lease)
    info = b.get_lease_info(lease.id)
    check(info.grantedTTL == 30 and 28 <= info.TTL <= 30, "time-to-live through another member")
    check(list(lease.keys) == [b"svc/py"], "the attached key is listed")
    renewed = lease.refresh()
    check(renewed[0].TTL == 30, "a refresh renews the full TTL")

    # (etcd3 0.12 waits for a held lock through a tenacity API that newer
    # tenacity releases no longer have, so the lock is taken uncontended.)
    first = a.lock("job", ttl=10)
    check(first.acquire(timeout=5), "the lock is acquired")
    check(first.is_acquired(), "the holder sees it held")
    holder, _ = b.get("/locks/job")
    check(holder == first.uuid, "another member sees the holder's key")
    first.release()
    check(b.get("/locks/job")[0] is None, "releasing deletes the holder's key")
    second = b.lock("job", ttl=10)
    check(second.acquire(timeout=5), "the lock is acquired again once released")
    second.release()

    lease.revoke()
    value, _ = b.get("svc/py")
    check(value is None, "revoking deletes the attached key")
    check(b.get_lease_info(lease.id).TTL == -1, "a revoked lease answers TTL -1")

    short = a.lease(1)
    a.put("tmp/py", "x", lease=short)
    deadline = time.time() + 15
    while b.get("tmp/py")[0] is not None:
        if time.time() > deadline:
            check(False, "an unrenewed lease's key is deleted")
        time.sleep(0.1)
    check(True, "an unrenewed lease's key is deleted")
    print("all passed", flush=True)


if __name__ == "__main__":
    main()
