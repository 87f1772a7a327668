#!/usr/bin/env python3
"""End-to-end: a node leaves a loaded 4-node cluster under a read/write/cas
load. `member remove 4` marks it draining; the rebalancer moves each of its
replicas to the other nodes (learner, snapshot, promotion, then removal of
node 4's replica, leadership handed over first), then marks it REMOVED and
node 4 drops its replicas. `member add 4` while it leaves is refused
(INVALID_ARGUMENT, ids are never reused) and does not stop the drain. Every shard keeps a quorum throughout (the load
keeps completing, its history is linearizable), every preloaded key reads
back, and after node 4 stops the three others serve everything.

Usage: test_e2e_leave.py PATH/TO/ringkvd BUILD_DIR
"""
# ctest-timeout: 240

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkclient as rk  # noqa: E402
import rkmove  # noqa: E402

SHARDS = 8
KEYS = 3000
check = rk.check


def main():
    with rkmove.loaded_cluster("leave", 4, SHARDS, KEYS) as (cl, keys, load):
        t0 = time.time()
        r = rk.call_leader(cl, rk.op_member_remove(4))
        check(r.status == "OK", "member remove: %r" % r)
        # While node 4 leaves (and once it is gone), adding it again under
        # its id is refused with a clear error; the drain goes on. Asked at
        # every poll, so the window after its last replica moved away (no
        # replicas, not yet REMOVED) is asked about too.
        peer4 = "127.0.0.1:%d" % (cl.base + 104)
        cli4 = "127.0.0.1:%d" % cl.client_port(4)
        refusals = 0
        deadline = time.time() + 90
        while True:
            r = rk.call_leader(cl, rk.op_member_add(4, peer4, cli4),
                               timeout=5)
            check(r.status == "INVALID_ARGUMENT" and r.message,
                  "member add 4 while it leaves: %r" % r)
            if refusals == 0:  # the meta leader answered the remove
                check("is leaving" in r.message, "first refusal: %r" %
                      r.message)
                first = r.message
            refusals += 1
            m = rkmove.shard_map(cl, 1)
            hosted = [s["shard"] for s in cl.status(4).shards]
            if m.node_states.get(4) == "REMOVED" and not hosted:
                break
            check(time.time() < deadline, "node 4 not drained: %s, hosts %s"
                  % (m.node_states, hosted))
            time.sleep(0.5)
        check(all(4 not in v + l for v, l in m.map_shards.values()),
              "node 4 still in the map: %s" % m.map_shards)
        print("drained in %.1fs; replicas %s; member add 4 refused %d "
              "times: %r, ..., %r" % (time.time() - t0,
                                      rkmove.replica_counts(m, [1, 2, 3]),
                                      refusals, first, r.message))
        cl.kill(4)
        cl.wait_leaders(SHARDS + 1, nodes=[1, 2, 3])
        rkmove.finish_load(cl, keys, load)
        print("leave: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
