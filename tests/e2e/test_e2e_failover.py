#!/usr/bin/env python3
"""End-to-end: SIGKILL of the node leading the most shards; the survivors
elect new leaders and keep taking writes; the killed node restarts on its
data dir, catches up, and serves the writes it missed. Then the whole
cluster restarts on its data dirs and keeps every acknowledged write.

Usage: test_e2e_failover.py PATH/TO/ringkvd
"""

import collections
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkclient as rk  # noqa: E402

SHARDS = 3


check = rk.check


def write_all(cl, keys, value, client_id, seq0):
    for n, k in enumerate(keys):
        r = rk.call_leader(cl, rk.op_put(k, value), client_id=client_id,
                           seq=seq0 + n, timeout=30)
        check(r.status == "OK", "put %s: %r" % (k, r))


def read_all(cl, keys, value, node=None, consistency=0):
    for k in keys:
        if node is None:
            r = rk.call_leader(cl, rk.op_get(k), consistency=consistency)
        else:
            c = rk.Conn(cl.client_port(node))
            r = c.call(rk.op_get(k), consistency=consistency)
            c.close()
        check(r.status == "OK" and r.value == value.encode(),
              "get %s on %s: %r %r" % (k, node, r, r.value))


def wait_caught_up(cl, keys, value, node, what, timeout=30.0):
    """Waits until a stale (local) read of every key on `node` returns
    `value`: the node caught up with the writes it missed."""
    deadline = time.time() + timeout
    while True:
        try:
            read_all(cl, keys, value, node=node, consistency=2)
            return
        except (AssertionError, OSError) as e:
            if time.time() > deadline:
                raise AssertionError("%s did not catch up: %s" % (what, e))
            time.sleep(0.2)


def metric(cl, node, name):
    _, body = cl.http(node, "/metrics")
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError("metric %s missing" % name)


def wait_quiesced(cl, n_groups, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if all(metric(cl, i, "ringkv_shards_quiesced") == n_groups
               for i in cl.procs):
            return
        time.sleep(0.2)
    raise AssertionError("groups did not quiesce: %s" % [
        metric(cl, i, "ringkv_shards_quiesced") for i in cl.procs])


def main():
    with rk.test_cluster("failover", 3, SHARDS) as cl:
        cl.start_all()
        leaders = cl.wait_leaders(SHARDS + 1)
        keys = ["k%d" % i for i in range(30)]
        write_all(cl, keys, "before", 1, 1)

        # Let every group go idle (quiesce: no ticks, no heartbeats), so the
        # failover below also proves that idle groups wake up when a peer
        # dies.
        wait_quiesced(cl, SHARDS + 1)

        # Kill the node leading the most shards (it leads at least one).
        victim = collections.Counter(leaders.values()).most_common(1)[0][0]
        print("leaders:", leaders, "killing node", victim)
        cl.kill(victim)
        survivors = list(cl.procs)
        new = cl.wait_leaders(SHARDS + 1, nodes=survivors)
        check(victim not in new.values(), "old leader still leads")
        print("new leaders:", new)

        # Writes continue with 2 of 3 nodes, reads see them.
        write_all(cl, keys, "during", 2, 1)
        read_all(cl, keys, "during")

        # The killed node comes back on its data dir and catches up: a
        # stale (local) read there returns the writes it missed. It comes
        # back after the leaders' next checkpoint (every second), so the
        # entries it is sent are read from the log chunks in LMDB, not from
        # the tails of the open transaction (src/storage/README.md).
        time.sleep(1.5)
        cl.start(victim)
        wait_caught_up(cl, keys, "during", victim, "restarted node")
        cl.wait_leaders(SHARDS + 1)

        # A frozen leader (SIGSTOP: its connections stay open, it just goes
        # silent) of idle groups is noticed through the node keepalives;
        # the others elect new leaders and keep taking writes.
        leaders = cl.wait_leaders(SHARDS + 1)
        wait_quiesced(cl, SHARDS + 1)
        frozen = collections.Counter(leaders.values()).most_common(1)[0][0]
        print("freezing node", frozen)
        cl.procs[frozen].send_signal(signal.SIGSTOP)
        try:
            others = [i for i in cl.procs if i != frozen]
            new = cl.wait_leaders(SHARDS + 1, nodes=others, exclude=[frozen])
            check(frozen not in new.values(), "frozen node still leads")
            saved = cl.procs.pop(frozen)
            try:
                write_all(cl, keys, "frozen", 4, 1)
            finally:
                cl.procs[frozen] = saved
        finally:
            cl.procs[frozen].send_signal(signal.SIGCONT)
        wait_caught_up(cl, keys, "frozen", frozen, "thawed node")

        # Every node stops cleanly and the whole cluster restarts on its
        # data dirs with every acknowledged write.
        rcs = cl.stop_all()
        check(all(rc == 0 for rc in rcs.values()), "clean stop: %s" % rcs)
        cl.start_all()
        cl.wait_leaders(SHARDS + 1)
        read_all(cl, keys, "frozen")
        write_all(cl, keys, "after", 3, 1)
        read_all(cl, keys, "after")
        # Logs name the bootstrap only once per node.
        for i in range(1, 4):
            check(cl.log(i).count("bootstrapped cluster") == 1,
                  "node %d bootstrapped twice" % i)
        rcs = cl.stop_all()
        check(all(rc == 0 for rc in rcs.values()), "clean stop: %s" % rcs)
        print("e2e failover: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
