#!/usr/bin/env python3
"""End-to-end: a shard is split under a concurrent read/write/cas load.

3 nodes, 2 data shards; 3,000 keys are written first (pipelined); 6 clients
run reads, writes and CAS on 24 registers (recorded for ringkv-lincheck).
`SplitShard 1` creates shard 3 on shard 1's nodes: the meta leader records
the split, shard 1's leader proposes the SPLIT entry, every replica moves
the keys of the given arcs into shard 3 in one transaction, the map
switches over. Then the donor's leader is killed (SIGKILL) and shard 3 is
split again while that node is down; the node comes back and must converge
(it applies the second SPLIT from its log, or catches up by snapshot).
Afterwards: the map has shards 1..4 and no split in flight, every node
hosts what the map says, every preloaded key reads back (from its new
shard), the moved keys are gone from the donors' scans, the history is
linearizable, metrics count the splits, and a restart of every node keeps
all of it. Last, the nodes restart with --split-threshold-bytes: big
shards split by themselves, but not the one whose data is one hash tag.

Usage: test_e2e_split.py PATH/TO/ringkvd BUILD_DIR
"""
# ctest-timeout: 300

import os
import random
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkclient as rk  # noqa: E402
import rkmove  # noqa: E402

SHARDS = 2
KEYS = 3000

check = rk.check


def split(cl, shard):
    r = rk.call_leader(cl, rk.op_split(shard), timeout=30)
    check(r.status == "OK", "split %d: %r" % (shard, r))
    return r.admin_shard


def wait_split_done(cl, new_shard, timeout=45.0):
    """Waits until every running node's map has new_shard, no split in
    flight, and every node hosts exactly the shards the map gives it."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            ms = {i: rkmove.shard_map(cl, i) for i in cl.procs}
            hosted = {i: sorted(s["shard"] for s in cl.status(i).shards)
                      for i in cl.procs}
        except (OSError, AssertionError) as e:
            last = str(e)
            continue
        m = ms[next(iter(ms))]
        last = ({i: (x.epoch, x.map_splits) for i, x in ms.items()}, hosted)
        if any(x.epoch != m.epoch for x in ms.values()):
            continue
        if new_shard not in m.map_shards or m.map_splits:
            continue
        want = {i: sorted(sh for sh, (v, l) in m.map_shards.items()
                          if i in v + l) for i in cl.procs}
        if hosted != want:
            continue
        return m
    raise AssertionError("split into %d not done within %.0fs: %s" %
                         (new_shard, timeout, last))


def scan_all(cl, shard):
    keys = []
    start = b""
    for _ in range(100):
        r = rk.call_leader(cl, rk.op_scan(shard, limit=1000,
                                          start_after=start,
                                          keys_only=True))
        check(r.status == "OK", "scan %d: %r" % (shard, r))
        keys += [k for k, _, _ in r.items]
        if not r.more or not r.items:
            return keys
        start = r.items[-1][0]
    raise AssertionError("scan of shard %d did not end" % shard)


def metric(cl, i, name):
    _, body = cl.http(i, "/metrics")
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def main():
    binary = sys.argv[1]
    build = rkmove.build_dir()
    work = tempfile.mkdtemp(prefix="rk-e2e-split-")
    # A low snapshot count: the node killed mid-split may come back by
    # snapshot past the SPLIT entry.
    cl = rk.Cluster(binary, work, n_nodes=3, shards=SHARDS,
                    extra=["--snapshot-count", "200"])
    ok = False
    load = None
    try:
        cl.start_all()
        cl.wait_leaders(SHARDS + 1)
        # Bad requests get a clear refusal and change nothing.
        for bad in (0, 99):
            r = rk.call_leader(cl, rk.op_split(bad))
            check(r.status == "INVALID_ARGUMENT",
                  "split of shard %d: %r" % (bad, r))
        r = rk.call_leader(cl, rk.op_split(1, new_shard=7))
        check(r.status == "INVALID_ARGUMENT", "split with an id: %r" % r)
        r = rk.call_leader(cl, rk.op_put(b"\xffringkv/split-out", b"x"))
        check(r.status == "INVALID_ARGUMENT", "reserved key: %r" % r)
        t0 = time.time()
        keys = rkmove.preload(cl, KEYS)
        # Long keys too (over the 480 bytes LMDB keys hold inline).
        longs = [("long%03d-" % i).encode() + b"y" * 1000 for i in range(100)]
        rkmove.pipelined(cl, [(k, rk.op_put(k, b"v-" + k)) for k in longs])
        keys += longs
        print("preloaded %d keys in %.1fs" % (len(keys), time.time() - t0))
        before = {s: sum(1 for k in scan_all(cl, s) if k.startswith(b"bulk"))
                  for s in (1, 2)}
        load = rkmove.Workload(cl, n_threads=6, n_keys=24)
        load.start()
        time.sleep(1.5)

        # 1. A split under load.
        t0 = time.time()
        new = split(cl, 1)
        check(new == SHARDS + 1, "new shard id %d" % new)
        m = wait_split_done(cl, new)
        print("split 1 -> %d done in %.1fs (epoch %d)" %
              (new, time.time() - t0, m.epoch))
        time.sleep(1.0)

        # 2. Split the new shard while its leader's node is down; the node
        # restarts mid-way and must converge.
        ls = cl.wait_leaders(SHARDS + 2)
        victim = ls[new]
        cl.kill(victim)
        t0 = time.time()
        new2 = split(cl, new)
        check(new2 == new + 1, "second new shard id %d" % new2)
        # Enough writes while it is down that the shards compact their
        # logs: the node may get shard %d by snapshot past the SPLIT entry
        # (then it creates shard %d empty and its leader fills it).
        more = [("more%05d" % i).encode() for i in range(2000)]
        rkmove.pipelined(cl, [(k, rk.op_put(k, b"v-" + k)) for k in more])
        keys += more
        time.sleep(0.5)
        cl.start(victim)
        m = wait_split_done(cl, new2, timeout=60)
        print("split %d -> %d with node %d killed done in %.1fs (epoch %d)" %
              (new, new2, victim, time.time() - t0, m.epoch))
        cl.wait_leaders(SHARDS + 3, timeout=60)
        # The restarted node counts only what it applied since it came
        # back; the others applied both SPLIT entries.
        for i in cl.procs:
            n = metric(cl, i, "ringkv_splits_applied_total")
            check(n is not None and (n >= 2 or i == victim),
                  "node %d ringkv_splits_applied_total %r" % (i, n))
        n = sum(metric(cl, i, "ringkv_splits_started_total") or 0
                for i in cl.procs)
        # (the meta leader that began the first one may be the restarted
        # node)
        check(n >= 1, "ringkv_splits_started_total over the nodes: %r" % n)

        # 3. Every node is killed right after a split of shard 2 is
        # recorded (its SPLIT entry proposed, committed or applied on some
        # of them, or not yet): after a restart the split completes.
        t0 = time.time()
        new3 = split(cl, 2)
        check(new3 == new2 + 1, "third new shard id %d" % new3)
        # The kill lands anywhere from "recorded, not proposed" to "applied
        # on some nodes"; the line below says where.
        pause = random.uniform(0, 0.15)
        time.sleep(pause)
        for i in list(cl.procs):
            cl.kill(i)
        logs = {i: cl.log(i) for i in (1, 2, 3)}
        print("killed %.2fs after the split of shard 2 was recorded: SPLIT "
              "proposed on %s, applied on %s" % (pause, [i for i, t in logs.items() if "shard 2: proposed the split"
                  in t], [i for i, t in logs.items()
                          if "shard 2: split applied" in t]))
        cl.start_all()
        m = wait_split_done(cl, new3, timeout=90)
        print("split 2 -> %d with every node killed done in %.1fs (epoch %d)"
              % (new3, time.time() - t0, m.epoch))
        cl.wait_leaders(SHARDS + 4, timeout=90)
        time.sleep(1.0)
        load.finish()
        print("load: %s" % load.counts)

        # Every preloaded key reads back; the shards' scans partition them.
        rkmove.check_preloaded(cl, keys)
        scans = {s: scan_all(cl, s) for s in (1, 2, new, new2, new3)}
        print("keys per shard: before %s after %s" %
              (before, {s: len(k) for s, k in scans.items()}))
        bulk = {s: [k for k in ks if k.startswith(b"bulk")]
                for s, ks in scans.items()}
        check(sum(len(v) for v in bulk.values()) == KEYS,
              "scans hold %d preloaded keys, want %d" %
              (sum(len(v) for v in bulk.values()), KEYS))
        check(sum(1 for ks in scans.values() for k in ks
                  if k.startswith(b"more")) == len(more),
              "scans miss keys written during the second split")
        check(sum(1 for ks in scans.values() for k in ks
                  if k.startswith(b"long")) == len(longs),
              "scans miss long keys")
        log = cl.log(victim)
        how = ("by snapshot (created empty, filled by its leader)"
               if "shard %d: local replica created" % new2 in log else
               "from its log (SPLIT entry applied)")
        print("node %d got shard %d %s" % (victim, new2, how))
        check(len(bulk[new]) > 0 and len(bulk[new2]) > 0,
              "the new shards hold no keys: %s" %
              {s: len(v) for s, v in bulk.items()})
        check(len(bulk[2]) + len(bulk[new3]) == before[2],
              "shard 2's keys are not partitioned by its split")
        check(len(bulk[new3]) > 0, "shard %d holds no keys" % new3)
        check(len(bulk[1]) + len(bulk[new]) + len(bulk[new2]) == before[1],
              "shard 1's keys are not partitioned by the splits")
        print("lincheck: %s" % load.check(build, os.path.join(
            work, "history.jsonl")))
        # Every replica of the newest shard holds its state (applied at
        # least the split point), the restarted node's too.
        deadline = time.time() + 30
        while True:
            ap = {i: [s["applied"] for s in cl.status(i).shards
                      if s["shard"] in (new2, new3)] for i in cl.procs}
            if all(len(a) == 2 and min(a) > 0 for a in ap.values()):
                break
            check(time.time() < deadline, "shard %d applied: %s" % (new2, ap))
            time.sleep(0.2)

        # A restart of every node keeps the map and the data.
        rcs = cl.stop_all()
        check(all(rc == 0 for rc in rcs.values()), "exit codes %s" % rcs)
        cl.start_all()
        cl.wait_leaders(SHARDS + 4, timeout=120)
        m2 = wait_split_done(cl, new3, timeout=30)
        check(m2.map_shards == m.map_shards, "map changed by the restart")
        rkmove.check_preloaded(cl, keys)

        # Automatic splits: with --split-threshold-bytes, a shard's leader
        # asks for a split once its data passes the threshold (shards 1, 2
        # and 5 hold about 45 KB each here, 3 and 4 about 22 KB).
        # 3,000 keys with one hash tag land on one ring position: their
        # shard must not be split over and over (a split cannot divide
        # them); it is left alone with a warning.
        hot = [b"{hot}%05d" % i for i in range(3000)]
        rkmove.pipelined(cl, [(k, rk.op_put(k, b"v-" + k)) for k in hot])
        keys += hot
        rcs = cl.stop_all()
        check(all(rc == 0 for rc in rcs.values()), "exit codes %s" % rcs)
        cl.extra += ["--split-threshold-bytes", "40KiB"]
        cl.start_all()
        t0 = time.time()
        m3 = wait_split_done(cl, new3 + 1, timeout=60)
        print("automatic split into shard %d in %.1fs (epoch %d, %d shards)"
              % (new3 + 1, time.time() - t0, m3.epoch, len(m3.map_shards)))
        deadline = time.time() + 60
        while not any("no automatic split" in cl.log(i) for i in cl.procs):
            check(time.time() < deadline, "the hot shard was not left alone")
            time.sleep(0.5)
        m4 = wait_split_done(cl, new3 + 1, timeout=30)
        print("hot hash tag: left alone after %d shards (epoch %d)" %
              (len(m4.map_shards), m4.epoch))
        rkmove.check_preloaded(cl, keys)
        ok = True
        print("split: ok")
    finally:
        if load is not None:
            load.finish()
        cl.stop_all()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("logs kept in", work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
