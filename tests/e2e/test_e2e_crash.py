#!/usr/bin/env python3
"""End-to-end: durability across a whole-cluster crash. Writers pipeline
puts on every node while all three nodes are SIGKILLed at once; after a
restart on the same data dirs every write that was acknowledged is there
(with its value or, for a key written again later, a later one), and the
cluster takes writes again.

Usage: test_e2e_crash.py PATH/TO/ringkvd
"""

import os
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkclient as rk  # noqa: E402

SHARDS = 3
WINDOW = 16


check = rk.check


def writer(cl, node, acked, stop, errors):
    """Pipelines puts to `node` (whatever shards it leads) until stopped or
    its connection dies; records acknowledged (key -> seq) pairs."""
    cid = 1000 + node
    try:
        c = rk.Conn(cl.client_port(node), timeout=5)
    except OSError:
        return
    seq = 0
    inflight = {}
    try:
        while not stop.is_set() or inflight:
            while not stop.is_set() and len(inflight) < WINDOW:
                seq += 1
                k = "w%d-%d" % (node, seq % 500)
                rid = c.send(rk.op_put(k, "%d" % seq), client_id=cid,
                             seq=seq)
                inflight[rid] = (k, seq)
            r = c.recv()
            k, s = inflight.pop(r.request_id)
            if r.status == "OK":
                acked.append((k, s))
            elif r.status not in ("NOT_LEADER", "UNAVAILABLE", "TIMEOUT"):
                errors.append("%s seq %d: %r" % (k, s, r))
    except (OSError, ConnectionError, ValueError):
        pass  # the node was killed
    finally:
        c.close()


def main():
    with rk.test_cluster("crash", 3, SHARDS) as cl:
        cl.start_all()
        cl.wait_leaders(SHARDS + 1)
        acked, errors = [], []
        stop = threading.Event()
        threads = [threading.Thread(target=writer,
                                    args=(cl, i, acked, stop, errors))
                   for i in (1, 2, 3)]
        for t in threads:
            t.start()
        # Let writes flow, then kill every node at once mid-stream.
        deadline = time.time() + 20
        while len(acked) < 300 and time.time() < deadline:
            time.sleep(0.05)
        for i in list(cl.procs):
            cl.procs[i].send_signal(signal.SIGKILL)
        for i in list(cl.procs):
            cl.procs[i].wait(timeout=20)
            del cl.procs[i]
        stop.set()
        for t in threads:
            t.join(timeout=30)
            check(not t.is_alive(), "writer thread hung")
        check(not errors, "unexpected statuses: %s" % errors[:5])
        check(len(acked) >= 100, "too few acknowledged writes: %d" %
              len(acked))
        print("acknowledged writes before the crash:", len(acked))

        # Per key, the highest acknowledged seq is the least it may read.
        want = {}
        for k, s in acked:
            want[k] = max(want.get(k, 0), s)
        cl.start_all()
        cl.wait_leaders(SHARDS + 1)
        for k, s in sorted(want.items()):
            r = rk.call_leader(cl, rk.op_get(k))
            check(r.status == "OK", "acknowledged %s lost: %r" % (k, r))
            check(int(r.value) >= s,
                  "%s reads seq %s, acknowledged %d" % (k, r.value, s))
        r = rk.call_leader(cl, rk.op_put("after", "crash"), client_id=1,
                           seq=1)
        check(r.status == "OK", "write after restart: %r" % r)
        rcs = cl.stop_all()
        check(all(rc == 0 for rc in rcs.values()), "clean stop: %s" % rcs)
        print("e2e crash: OK (%d keys checked)" % len(want))
    return 0


if __name__ == "__main__":
    sys.exit(main())
