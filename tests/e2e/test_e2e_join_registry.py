#!/usr/bin/env python3
"""End-to-end: the shard map lives in the meta shard (shard 0). A 3-node
cluster stores its bootstrap map through Raft; `member add` (shard 0)
registers a node (no replica moves onto it before it runs) and `member
remove` retires it (at once, as it hosts nothing), each a change of the map
with epoch + 1 that every node converges on; bad requests get clear errors
and change nothing; a client with an old epoch gets WRONG_SHARD and the
current epoch; after a restart of every node the same map comes back.

Usage: test_e2e_join_registry.py PATH/TO/ringkvd
"""
# ctest-timeout: 120

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkclient as rk  # noqa: E402

SHARDS = 4

check = rk.check


def shard_map(cl, node):
    c = rk.Conn(cl.client_port(node), timeout=5)
    try:
        return c.call(rk.op_shard_map())
    finally:
        c.close()


def wait_map(cl, pred, what, timeout=30.0):
    """Waits until every running node's map satisfies pred; returns them."""
    deadline = time.time() + timeout
    maps = {}
    while time.time() < deadline:
        try:
            maps = {i: shard_map(cl, i) for i in cl.procs}
        except OSError:
            time.sleep(0.1)
            continue
        if all(r.status == "OK" and pred(r) for r in maps.values()):
            return maps
        time.sleep(0.1)
    raise AssertionError("%s: %s" % (what, {
        i: (r.status, r.epoch, r.node_states) for i, r in maps.items()}))


def main():
    with rk.test_cluster("join-reg", 3, SHARDS) as cl:
        cl.start_all()
        cl.wait_leaders(SHARDS + 1)
        # The bootstrap map is committed by the meta group and every node
        # serves the same epoch, nodes and placement.
        maps = wait_map(cl, lambda r: r.epoch >= 1 and len(r.nodes) == 3,
                        "bootstrap map")
        m0 = maps[1]
        check(m0.n_shards == SHARDS, "data shards in the map: %d" %
              m0.n_shards)
        check(set(m0.map_shards) == set(range(SHARDS + 1)),
              "shards in the map: %s" % sorted(m0.map_shards))
        for sh, (voters, learners) in m0.map_shards.items():
            check(len(voters) == 3 and not learners,
                  "shard %d replicas %s %s" % (sh, voters, learners))
        check(all(dict(r.nodes)[3] == "127.0.0.1:%d" % cl.client_port(3)
                  for r in maps.values()), "client addresses in the map")
        r = rk.call_leader(cl, rk.op_put(b"k1", b"v1"), client_id=7, seq=1)
        check(r.status == "OK", "put: %r" % r)
        epoch = max(r.epoch for r in maps.values())
        maps = wait_map(cl, lambda r: r.epoch == epoch, "one epoch")

        # Register node 4 through the meta leader: epoch + 1 everywhere.
        peer4 = "127.0.0.1:%d" % (cl.base + 104)
        cli4 = "127.0.0.1:%d" % cl.client_port(4)
        r = rk.call_leader(cl, rk.op_member_add(4, peer4, cli4))
        check(r.status == "OK" and r.result == "admin", "member add: %r" % r)
        check(r.epoch == epoch + 1, "epoch after add %d, was %d" %
              (r.epoch, epoch))
        epoch += 1
        maps = wait_map(cl, lambda r: r.epoch == epoch and
                        r.node_states.get(4) == "ACTIVE", "node 4 known")
        check(dict(maps[2].nodes)[4] == cli4, "node 4's client address")

        # A retried join of the same node is answered OK, changes nothing.
        r = rk.call_leader(cl, rk.op_member_add(4, peer4, cli4))
        check(r.status == "OK" and r.epoch == epoch, "retried add: %r" % r)
        # Bad requests: clear errors, nothing changes.
        bad = [(rk.op_member_add(4, "127.0.0.1:1", cli4), "INVALID_ARGUMENT"),
               (rk.op_member_add(5, "nonsense", cli4), "INVALID_ARGUMENT"),
               (rk.op_member_add(5, peer4, ""), "INVALID_ARGUMENT"),
               (rk.op_member_add(5, peer4, cli4, shard=2),
                "INVALID_ARGUMENT"),
               (rk.op_member_remove(9), "INVALID_ARGUMENT")]
        for op, want in bad:
            # Straight to the meta leader (call_leader would retry
            # UNAVAILABLE).
            c = rk.Conn(cl.client_port(cl.wait_leaders(SHARDS + 1)[0]))
            r = c.call(op)
            c.close()
            check(r.status == want and r.message,
                  "%r: want %s, got %r" % (op, want, r))
        check(all(m.epoch == epoch for m in
                  wait_map(cl, lambda r: True, "maps").values()),
              "a refused change moved the epoch")

        # A client routing with an old epoch is told to refresh.
        c = rk.Conn(cl.client_port(1))
        r = c.call(rk.op_get(b"k1"), epoch=1)
        c.close()
        check(r.status == "WRONG_SHARD" and r.epoch == epoch,
              "stale epoch: %r epoch %d" % (r, r.epoch))
        r = rk.call_leader(cl, rk.op_get(b"k1"), epoch=epoch)
        check(r.status == "OK" and r.value == b"v1", "get: %r" % r)

        # Retire node 4 (it hosts nothing): REMOVED, epoch + 1.
        r = rk.call_leader(cl, rk.op_member_remove(4))
        check(r.status == "OK" and r.epoch == epoch + 1,
              "member remove: %r %d" % (r, r.epoch))
        epoch += 1
        wait_map(cl, lambda r: r.epoch == epoch and
                 r.node_states.get(4) == "REMOVED", "node 4 removed")
        r = rk.call_leader(cl, rk.op_member_add(4, peer4, cli4), timeout=5)
        check(r.status == "INVALID_ARGUMENT", "id reuse: %r" % r)

        # Every node restarts: the same map comes back from the meta group.
        before = shard_map(cl, 1)
        rcs = cl.stop_all()
        check(all(rc == 0 for rc in rcs.values()), "exit codes %s" % rcs)
        cl.start_all()
        cl.wait_leaders(SHARDS + 1)
        maps = wait_map(cl, lambda r: r.epoch == epoch, "map after restart")
        for i, r in maps.items():
            check(r.node_states == before.node_states and
                  r.map_shards == before.map_shards and
                  r.points == before.points,
                  "node %d map after restart differs" % i)
        r = rk.call_leader(cl, rk.op_get(b"k1"))
        check(r.status == "OK" and r.value == b"v1", "get after restart")
        print("join registry: ok (epoch %d)" % epoch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
