#!/usr/bin/env python3
"""End-to-end: log compaction and catch-up by snapshot. With a small
--snapshot-count, a node that was down while the others wrote (and compacted
their logs past its position) restarts, receives a snapshot of every shard's
state machine, and then serves all the writes; further writes replicate to
it from the log again.

Usage: test_e2e_snapshot.py PATH/TO/ringkvd
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkclient as rk  # noqa: E402

SHARDS = 2


check = rk.check


def read_local(cl, node, keys, prefix):
    for k in keys:
        c = rk.Conn(cl.client_port(node))
        r = c.call(rk.op_get(k), consistency=2)
        c.close()
        if r.status != "OK" or r.value != (prefix + k).encode():
            return "%s: %r %r" % (k, r, r.value)
    return None


def wait_local(cl, node, keys, prefix, timeout=60.0):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = read_local(cl, node, keys, prefix)
        except OSError as e:
            last = str(e)
        if last is None:
            return
        time.sleep(0.2)
    raise AssertionError("node %d did not catch up: %s" % (node, last))


def main():
    with rk.test_cluster("snap", 3, SHARDS,
                         extra=["--snapshot-count", "20"]) as cl:
        cl.start_all()
        cl.wait_leaders(SHARDS + 1)
        first = ["a%d" % i for i in range(20)]
        for n, k in enumerate(first):
            r = rk.call_leader(cl, rk.op_put(k, "1" + k), client_id=1,
                               seq=n + 1)
            check(r.status == "OK", "put: %r" % r)
        wait_local(cl, 3, first, "1")

        # Node 3 misses ~150 writes per shard: far more than the 20 + 5
        # entries the others keep, so their logs no longer reach back.
        cl.kill(3)
        print("node 3 killed; leaders now", cl.wait_leaders(SHARDS + 1,
                                                          exclude=[3]))
        keys = ["b%d" % i for i in range(300)]
        for n, k in enumerate(keys):
            r = rk.call_leader(cl, rk.op_put(k, "2" + k), client_id=2,
                               seq=n + 1)
            check(r.status == "OK", "put: %r" % r)

        cl.start(3)
        print("node 3 restarted")
        wait_local(cl, 3, keys, "2")
        wait_local(cl, 3, first, "1")
        log3 = cl.log(3)
        check("installing snapshot" in log3 or "installed" in log3,
              "node 3 caught up without a snapshot (compaction inactive?)")

        # Sessions idle for more than 4 x --snapshot-count entries expire
        # through the log (bounded memory): client 1's first write, retried
        # now, is no longer recognised as a duplicate. A recent session
        # (client 2) still deduplicates.
        r = rk.call_leader(cl, rk.op_put(first[0], "again"), client_id=1,
                           seq=1)
        check(r.status == "OK" and not r.duplicate,
              "expired session still deduplicates: %r" % r)
        r = rk.call_leader(cl, rk.op_put(keys[-1], "again"), client_id=2,
                           seq=len(keys))
        check(r.status == "OK" and r.duplicate,
              "recent session lost: %r" % r)

        # Later writes reach it through the log again.
        more = ["c%d" % i for i in range(20)]
        for n, k in enumerate(more):
            r = rk.call_leader(cl, rk.op_put(k, "3" + k), client_id=3,
                               seq=n + 1)
            check(r.status == "OK", "put: %r" % r)
        wait_local(cl, 3, more, "3")

        rcs = cl.stop_all()
        check(all(rc == 0 for rc in rcs.values()), "clean stop: %s" % rcs)
        # And it all survives a full restart.
        cl.start_all()
        cl.wait_leaders(SHARDS + 1)
        for k in keys[:50]:
            r = rk.call_leader(cl, rk.op_get(k))
            check(r.status == "OK" and r.value == ("2" + k).encode(),
                  "after restart %s: %r" % (k, r))
        rcs = cl.stop_all()
        check(all(rc == 0 for rc in rcs.values()), "clean stop: %s" % rcs)
        print("e2e snapshot: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
