#!/usr/bin/env python3
"""End-to-end: a 3-node ringkvd cluster on loopback serves put/get/delete/
cas/scan, pipelined requests, exactly-once retries, read modes, status and
the shard map, then stops cleanly on SIGTERM.

Usage: test_e2e_kv.py PATH/TO/ringkvd
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkclient as rk  # noqa: E402

SHARDS = 4


check = rk.check


def main():
    with rk.test_cluster("kv", 3, SHARDS) as cl:
        cl.start_all()
        leaders = cl.wait_leaders(SHARDS + 1)
        print("leaders:", leaders)

        # put / get on every key through whichever node leads its shard.
        keys = ["key-%d" % i for i in range(40)]
        for i, k in enumerate(keys):
            r = rk.call_leader(cl, rk.op_put(k, "v%d" % i), client_id=7,
                               seq=i + 1)
            check(r.status == "OK", "put %s: %r" % (k, r))
            check(r.revision > 0, "put revision")
        for i, k in enumerate(keys):
            r = rk.call_leader(cl, rk.op_get(k))
            check(r.status == "OK" and r.found and r.value == b"v%d" % i,
                  "get %s: %r %r" % (k, r, r.value))
        r = rk.call_leader(cl, rk.op_get("absent"))
        check(r.status == "NOT_FOUND" and not r.found, "get absent: %r" % r)

        # A node that does not lead the key's shard answers NOT_LEADER with
        # the leader's id and client address.
        hints = 0
        for i in cl.procs:
            c = rk.Conn(cl.client_port(i))
            r = c.call(rk.op_put("hinted", "x"), client_id=8, seq=1)
            c.close()
            if r.status == "NOT_LEADER":
                hints += 1
                check(r.leader_id in cl.procs and r.leader_hint ==
                      "127.0.0.1:%d" % cl.client_port(r.leader_id),
                      "leader hint: %r %r" % (r, r.leader_hint))
            else:
                check(r.status == "OK", "put on the leader: %r" % r)
        check(hints == 2, "two of three nodes must redirect, got %d" % hints)

        # Exactly-once: the same (client, seq) again returns the original
        # reply and does not write twice.
        first = rk.call_leader(cl, rk.op_put("once", "a"), client_id=99,
                               seq=1)
        again = rk.call_leader(cl, rk.op_put("once", "b"), client_id=99,
                               seq=1)
        check(again.status == "OK" and again.duplicate and
              again.revision == first.revision, "duplicate: %r" % again)
        r = rk.call_leader(cl, rk.op_get("once"))
        check(r.value == b"a", "duplicate applied twice: %r" % r.value)

        # cas by value, by revision, and mismatches.
        r = rk.call_leader(cl, rk.op_cas("key-0", "new", expect_value="v0"),
                           client_id=7, seq=1000)
        check(r.status == "OK", "cas by value: %r" % r)
        rev = r.revision
        r = rk.call_leader(cl, rk.op_cas("key-0", "x", expect_value="v0"),
                           client_id=7, seq=1001)
        check(r.status == "CAS_MISMATCH", "cas mismatch: %r" % r)
        r = rk.call_leader(cl, rk.op_cas("key-0", "newer",
                                         expect_revision=rev),
                           client_id=7, seq=1002)
        check(r.status == "OK", "cas by revision: %r" % r)
        r = rk.call_leader(cl, rk.op_cas("fresh", "1", expect_absent=True),
                           client_id=7, seq=1003)
        check(r.status == "OK", "cas create-if-absent: %r" % r)
        r = rk.call_leader(cl, rk.op_cas("fresh", "2", expect_absent=True),
                           client_id=7, seq=1004)
        check(r.status == "CAS_MISMATCH" and r.found and r.value == b"1",
              "cas absent mismatch carries the current value: %r" % r)
        r = rk.call_leader(cl, rk.op_cas("fresh", "", expect_value="1",
                                         delete_on_match=True),
                           client_id=7, seq=1005)
        check(r.status == "OK", "cas delete on match: %r" % r)
        r = rk.call_leader(cl, rk.op_get("fresh"))
        check(r.status == "NOT_FOUND", "cas delete: %r" % r)

        # delete
        r = rk.call_leader(cl, rk.op_delete("key-1"), client_id=7, seq=2000)
        check(r.status == "OK", "delete: %r" % r)
        r = rk.call_leader(cl, rk.op_get("key-1"))
        check(r.status == "NOT_FOUND", "get after delete: %r" % r)
        r = rk.call_leader(cl, rk.op_delete("key-1"), client_id=7, seq=2001)
        check(r.status == "NOT_FOUND", "delete absent: %r" % r)

        # scan by prefix over every shard: all surviving key-* come back.
        seen = set()
        for shard in range(1, SHARDS + 1):
            start = b""
            for _ in range(100):
                r = rk.call_leader(cl, rk.op_scan(shard, "key-", limit=5,
                                                  start_after=start))
                check(r.status == "OK", "scan: %r" % r)
                check(len(r.items) <= 5, "scan limit")
                for k, v, rev in r.items:
                    check(k.startswith(b"key-"), "scan prefix")
                    check(k not in seen, "scan duplicate %r" % k)
                    seen.add(k)
                if not r.more:
                    break
                start = r.items[-1][0]
        check(seen == set(k.encode() for k in keys) - {b"key-1"},
              "scan found %d keys" % len(seen))
        r = rk.call_leader(cl, rk.op_scan(SHARDS + 1, ""))
        check(r.status == "WRONG_SHARD", "scan of unknown shard: %r" % r)

        # Pipelining: 200 requests in flight on one connection, answered
        # by request id.
        leader = leaders[1]
        c = rk.Conn(cl.client_port(leader))
        ids = {}
        for i in range(200):
            k = "pipe-%d" % i
            ids[c.send(rk.op_put(k, str(i)), client_id=55, seq=i + 1)] = k
        answered = {}
        for _ in range(200):
            r = c.recv()
            answered[r.request_id] = r.status
        c.close()
        check(set(answered) == set(ids), "pipelined ids")
        statuses = set(answered.values())
        check(statuses <= {"OK", "NOT_LEADER"} and "OK" in statuses,
              "pipelined statuses %s" % statuses)

        # Read modes: stale on a follower, lease on the leader.
        r = rk.call_leader(cl, rk.op_put("mode", "m"), client_id=7, seq=3000)
        check(r.status == "OK", "put mode")
        deadline = time.time() + 10
        got = None
        while time.time() < deadline:
            for i in cl.procs:
                c = rk.Conn(cl.client_port(i))
                got = c.call(rk.op_get("mode"), consistency=2)
                c.close()
                if got.status != "OK":
                    break
            else:
                break
            time.sleep(0.1)
        check(got is not None and got.status == "OK" and got.value == b"m",
              "stale read on every replica: %r" % got)
        r = rk.call_leader(cl, rk.op_get("mode"), consistency=1)
        check(r.status == "OK" and r.value == b"m", "lease read: %r" % r)
        lease_rounds = 0
        for i in cl.procs:
            _, body = cl.http(i, "/metrics")
            for line in body.splitlines():
                if line.startswith("ringkv_lease_read_rounds_total "):
                    lease_rounds += float(line.split()[1])
        check(lease_rounds >= 1, "the lease read did not use the lease")

        # status and shard map
        st = cl.status(1)
        check(len(st.shards) == SHARDS + 1, "status shards")
        c = rk.Conn(cl.client_port(2))
        m = c.call(rk.op_shard_map())
        c.close()
        check(m.status == "OK" and m.n_shards == SHARDS and
              len(m.nodes) == 3 and m.epoch == 1 and len(m.points) > 0,
              "shard map: %r" % m)
        check(sorted(p[0] for p in m.points) == [p[0] for p in m.points],
              "ring points sorted")
        check({p[1] for p in m.points} == set(range(1, SHARDS + 1)),
              "every data shard owns ring points")
        c = rk.Conn(cl.client_port(3))
        r = c.call(rk.op_member_list())
        c.close()
        check(r.status == "OK" and len(r.nodes) == 3, "members: %r" % r)

        # Leader transfer of shard 1 to another node.
        old = cl.wait_leaders(SHARDS + 1)[1]
        target = [i for i in cl.procs if i != old][0]
        c = rk.Conn(cl.client_port(old))
        r = c.call(rk.op_transfer_leader(1, target))
        c.close()
        check(r.status == "OK", "transfer leader: %r" % r)
        deadline = time.time() + 15
        while cl.leaders().get(1) != target:
            check(time.time() < deadline, "leadership did not move")
            time.sleep(0.1)
        # A stale epoch gets WRONG_SHARD with the current one.
        c = rk.Conn(cl.client_port(1))
        r = c.call(rk.op_get("mode"), epoch=42)
        c.close()
        check(r.status == "WRONG_SHARD" and r.epoch == 1, "epoch: %r" % r)

        rcs = cl.stop_all()
        check(all(rc == 0 for rc in rcs.values()),
              "clean SIGTERM exits: %s" % rcs)
        print("e2e kv: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
