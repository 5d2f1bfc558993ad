"""Python's etcd3 client (0.12) against raftkv: put, get, watch a key and a
prefix, replay from a start revision, prev_kv, cancel, and a compacted start
revision. Run by tests/client_libraries.rs as `watch.py HOST:PORT HOST:PORT`
(writes through the first member, watches on the second). Prints `ok: ...`
per check and exits non-zero on the first failure."""

import queue
import sys
import threading

import etcd3
import etcd3.events
import etcd3.exceptions

from checks import check, client


def main():
    writer, watcher = client(sys.argv[1]), client(sys.argv[2])

    first = writer.put("py/a", "1").header.revision
    writer.put("py/b", "2")
    writer.delete("py/a")
    value, meta = watcher.get("py/b")
    check(value == b"2" and meta.mod_revision == first + 1, "get through another member")

    # A prefix from a past revision: history first, in revision order.
    events, cancel = watcher.watch_prefix("py/", start_revision=first, prev_kv=True)
    seen = []
    for event in events:
        seen.append((type(event).__name__, event.key, event.value, event.mod_revision, event.prev_value))
        if len(seen) == 3:
            break
    cancel()
    check(
        seen
        == [
            # etcd3 gives an absent previous value as protobuf's default.
            ("PutEvent", b"py/a", b"1", first, b""),
            ("PutEvent", b"py/b", b"2", first + 1, b""),
            ("DeleteEvent", b"py/a", b"", first + 2, b"1"),
        ],
        "watch_prefix replays history with prev_kv: %r" % (seen,),
    )

    # A key from now on, through a callback; then cancelled.
    got = queue.Queue()
    watch_id = watcher.add_watch_callback("py/live", got.put)
    writer.put("py/other", "x")
    writer.put("py/live", "now")
    response = got.get(timeout=10)
    check(
        [(e.key, e.value) for e in response.events] == [(b"py/live", b"now")],
        "a live put reaches the callback, and only the watched key's",
    )
    watcher.cancel_watch(watch_id)
    writer.put("py/live", "after cancel")
    try:
        late = got.get(timeout=1)
        check(False, "no event after cancel, got %r" % (late,))
    except queue.Empty:
        check(True, "no event after cancel")

    # watch_once: the next change to a key.
    done = threading.Event()

    def put_soon():
        done.wait(0.5)
        writer.put("py/once", "1")

    threading.Thread(target=put_soon).start()
    event = watcher.watch_once("py/once", timeout=10)
    check(isinstance(event, etcd3.events.PutEvent) and event.value == b"1", "watch_once")

    # A start revision below the compaction point.
    now = writer.put("py/c", "3").header.revision
    writer.compact(now, physical=True)
    events, cancel = watcher.watch_prefix("py/", start_revision=first)
    try:
        for event in events:
            check(False, "an event from a compacted revision: %r" % (event,))
    except etcd3.exceptions.RevisionCompactedError as e:
        check(e.compacted_revision == now, "a compacted start revision raises RevisionCompactedError(%d)" % now)
    finally:
        cancel()
    print("all passed", flush=True)


if __name__ == "__main__":
    main()
