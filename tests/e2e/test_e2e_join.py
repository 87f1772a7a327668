#!/usr/bin/env python3
"""End-to-end: a 4th node joins a loaded 3-node, 16-shard cluster under a
read/write/cas load. 10,000 keys are written first (pipelined); node 4
starts with --join; the rebalancer moves replicas onto it one shard at a
time (learner, snapshot, promotion, removal of the old replica) and then
balances the leaders. Afterwards replicas and leaders per node differ by
at most one, every preloaded key reads back, the recorded history of the
load is linearizable (ringkv-lincheck), and a restart of every node brings
the same map back.

Usage: test_e2e_join.py PATH/TO/ringkvd BUILD_DIR
"""
# ctest-timeout: 360

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkclient as rk  # noqa: E402
import rkmove  # noqa: E402

SHARDS = 16
KEYS = 10000
check = rk.check


def main():
    with rkmove.loaded_cluster("join", 3, SHARDS, KEYS,
                               joiners=1) as (cl, keys, load):
        t0 = time.time()
        cl.start(4)
        cnt, lc = rkmove.wait_balanced(cl, [1, 2, 3, 4])
        print("balanced %.1fs after the join: replicas %s leaders %s" %
              (time.time() - t0, cnt, lc))
        rkmove.finish_load(cl, keys, load)

        before = rkmove.shard_map(cl, 1)
        rcs = cl.stop_all()
        check(all(rc == 0 for rc in rcs.values()), "exit codes %s" % rcs)
        for i in (1, 2, 3, 4):
            cl.start(i)
        # A bound for a loaded CI machine. The one failure at 60 s (shard 5
        # leaderless) was node 4 restarting replicas as groups of one (the
        # check below), fixed in storage.
        cl.wait_leaders(SHARDS + 1, timeout=120)
        # Every replica restarts with its group's configuration, the one the
        # map holds (a replica created empty on node 4 and caught up from the
        # log once restarted as a group of one, {4}, and elected itself).
        for i in (1, 2, 3, 4):
            for s in cl.status(i).shards:
                v, l = before.map_shards[s["shard"]]
                check(s["replicas"] == sorted(v) and s["learners"] == sorted(l),
                      "node %d shard %d after restart: replicas %s learners "
                      "%s, the map says %s %s" % (i, s["shard"], s["replicas"],
                                                  s["learners"], v, l))
        for i in (1, 2, 3, 4):
            deadline = time.time() + 20
            while True:
                m = rkmove.shard_map(cl, i)
                if m.epoch == before.epoch:
                    break
                check(time.time() < deadline, "node %d epoch %d, want %d" %
                      (i, m.epoch, before.epoch))
                time.sleep(0.2)
            check(m.map_shards == before.map_shards and
                  m.node_states == before.node_states,
                  "node %d's map after restart differs" % i)
        # The groups agree with the map again (every node hosts what the
        # map says, leaders spread within one) and serve the data.
        rkmove.wait_balanced(cl, [1, 2, 3, 4], timeout=60)
        rkmove.check_preloaded(cl, keys)
        print("join: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
