"""Helpers of the replica-move e2e tests (join, leave, split): fast
pipelined bulk writes and reads, a register workload that records a history
for ringkv-lincheck, and the balance checks. Stdlib only."""

import contextlib
import json
import os
import random
import subprocess
import sys
import threading
import time

import rkclient as rk


def pipelined(cl, ops, rounds=40):
    """Sends every (tag, op) pipelined, following NOT_LEADER hints, and
    retrying what was not answered OK/NOT_FOUND (ops must be idempotent).
    Returns {tag: Response}."""
    done = {}
    target = {}
    pending = list(ops)
    for _ in range(rounds):
        if not pending:
            break
        live = list(cl.procs)
        by_node = {}
        for tag, op in pending:
            node = target.get(tag, live[hash(tag) % len(live)])
            if node not in cl.procs:
                node = live[0]
            by_node.setdefault(node, []).append((tag, op))
        pending = []
        for node, batch in by_node.items():
            try:
                c = rk.Conn(cl.client_port(node), timeout=15)
            except OSError:
                pending.extend(batch)
                continue
            try:
                for i in range(0, len(batch), 500):
                    part = batch[i:i + 500]
                    rids = {c.send(op): (tag, op) for tag, op in part}
                    for _ in part:
                        r = c.recv()
                        tag, op = rids[r.request_id]
                        if r.status in ("OK", "NOT_FOUND"):
                            done[tag] = r
                            continue
                        if r.status == "NOT_LEADER" and r.leader_id:
                            target[tag] = r.leader_id
                        pending.append((tag, op))
            except OSError:
                pending.extend(b for b in batch if b[0] not in done)
            finally:
                c.close()
        if pending:
            time.sleep(0.2)
    if pending:
        raise AssertionError("%d ops unanswered, e.g. %r" %
                             (len(pending), pending[:3]))
    return done


def preload(cl, n):
    keys = [("bulk%05d" % i).encode() for i in range(n)]
    pipelined(cl, [(k, rk.op_put(k, b"v-" + k)) for k in keys])
    return keys


def check_preloaded(cl, keys):
    got = pipelined(cl, [(k, rk.op_get(k)) for k in keys])
    bad = [k for k in keys if got[k].status != "OK" or
           got[k].value != b"v-" + k]
    if bad:
        raise AssertionError("%d of %d keys lost or wrong, e.g. %r" %
                             (len(bad), len(keys), bad[:5]))


def build_dir():
    """The build dir a test gets as its second argument (ringkv-lincheck is
    under it), else the one three levels above the ringkvd binary."""
    if len(sys.argv) > 2:
        return sys.argv[2]
    return os.path.dirname(os.path.dirname(os.path.dirname(
        rk.ringkvd_path())))


@contextlib.contextmanager
def loaded_cluster(tag, n_nodes, shards, n_keys, joiners=0, **kw):
    """An rk.test_cluster started and led, `n_keys` keys preloaded, and a
    Workload running for 2 s; yields (cl, keys, load). `joiners` more nodes
    get free ports too (they join later). The load stops on the way out,
    before the nodes do."""
    with rk.test_cluster(tag, n_nodes, shards, **kw) as cl:
        if joiners:
            cl.base = rk.free_port_base(n_nodes + joiners)
        cl.start_all()
        cl.wait_leaders(shards + 1)
        t0 = time.time()
        keys = preload(cl, n_keys)
        print("preloaded %d keys in %.1fs" % (n_keys, time.time() - t0))
        load = Workload(cl)
        load.start()
        try:
            time.sleep(2)
            yield cl, keys, load
        finally:
            load.finish()


def finish_load(cl, keys, load):
    """Stops the load a second later; then every preloaded key must read
    back and the load's history must be linearizable (ringkv-lincheck)."""
    time.sleep(1)
    load.finish()
    print("load: %s" % load.counts)
    check_preloaded(cl, keys)
    print("lincheck: %s" % load.check(build_dir(), os.path.join(
        cl.workdir, "history.jsonl")))


class Workload:
    """Threads doing read/write/cas on a few registers, each op retried on
    the leader (writes with the same client_id/seq: exactly once) until a
    deadline; the history goes to a JSON-lines file for ringkv-lincheck."""

    def __init__(self, cl, n_threads=4, n_keys=8, op_deadline=10.0):
        self.cl = cl
        self.n_threads = n_threads
        self.keys = ["reg%d" % i for i in range(n_keys)]
        self.op_deadline = op_deadline
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.history = []
        self.index = 0
        self.counts = {"ok": 0, "fail": 0, "info": 0}
        self.threads = []

    def _log(self, ev):
        with self.lock:
            ev["index"] = self.index
            ev["time"] = time.monotonic_ns()
            self.index += 1
            self.history.append(ev)
            if ev["type"] in self.counts:
                self.counts[ev["type"]] += 1

    def _attempt(self, proc, op, kind, seq, leader):
        deadline = time.time() + self.op_deadline
        node = leader.get("n")
        while time.time() < deadline and not self.stop.is_set():
            live = list(self.cl.procs)
            if not live:  # every node is down for a moment
                time.sleep(0.05)
                continue
            if node not in self.cl.procs:
                node = random.choice(live)
            try:
                c = rk.Conn(self.cl.client_port(node), timeout=5)
                try:
                    r = c.call(op, client_id=1000 + proc, seq=seq,
                               timeout_ms=3000)
                finally:
                    c.close()
            except OSError:
                node = None
                time.sleep(0.05)
                continue
            if r.status in ("OK", "NOT_FOUND", "CAS_MISMATCH"):
                leader["n"] = node
                return r
            if r.status == "NOT_LEADER" and r.leader_id:
                node = r.leader_id
            else:
                node = None if r.status == "NOT_LEADER" else node
                time.sleep(0.05)
        return None

    def _run(self, proc):
        rnd = random.Random(proc)
        seq = 0
        n = 0
        leader = {}
        last = {}
        while not self.stop.is_set():
            key = rnd.choice(self.keys)
            f = rnd.choice(["read", "read", "write", "write", "cas"])
            n += 1
            val = proc * 1000000 + n
            if f == "read":
                op = rk.op_get(key.encode())
                ev = {"process": proc, "type": "invoke", "f": "read",
                      "key": key, "value": None}
                s = 0
            elif f == "write":
                op = rk.op_put(key.encode(), str(val).encode())
                ev = {"process": proc, "type": "invoke", "f": "write",
                      "key": key, "value": val}
                seq += 1
                s = seq
            else:
                old = last.get(key)
                if old is None:
                    op = rk.op_cas(key.encode(), str(val).encode(),
                                   expect_absent=True)
                else:
                    op = rk.op_cas(key.encode(), str(val).encode(),
                                   expect_value=str(old).encode())
                ev = {"process": proc, "type": "invoke", "f": "cas",
                      "key": key, "value": [old, val]}
                seq += 1
                s = seq
            self._log(dict(ev))
            r = self._attempt(proc, op, f, s, leader)
            done = dict(ev)
            if r is None:
                done["type"] = "fail" if f == "read" else "info"
            elif f == "read":
                done["type"] = "ok"
                done["value"] = int(r.value) if r.status == "OK" else None
                if done["value"] is not None:
                    last[key] = done["value"]
            elif r.status == "OK":
                done["type"] = "ok"
                last[key] = val
            else:
                done["type"] = "fail"
                if r.status == "CAS_MISMATCH" and r.found:
                    last[key] = int(r.value)
            self._log(done)

    def start(self):
        for p in range(self.n_threads):
            t = threading.Thread(target=self._run, args=(p,), daemon=True)
            t.start()
            self.threads.append(t)

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    def check(self, build_dir, path):
        """Writes the history and runs ringkv-lincheck on it; returns its
        output. Raises if not linearizable (or no op completed)."""
        with open(path, "w") as f:
            for ev in self.history:
                f.write(json.dumps(ev) + "\n")
        if self.counts["ok"] < 20:
            raise AssertionError("too few completed ops: %s" % self.counts)
        lc = os.path.join(build_dir, "jepsen", "lincheck", "ringkv-lincheck")
        p = subprocess.run([lc, "--model", "cas-register", "--time-limit",
                            "60", path], capture_output=True, timeout=120)
        out = (p.stdout + p.stderr).decode(errors="replace")
        if p.returncode != 0:
            raise AssertionError("history %s not linearizable (rc %d): %s" %
                                 (path, p.returncode, out[-2000:]))
        return out.strip()


def shard_map(cl, node):
    c = rk.Conn(cl.client_port(node), timeout=5)
    try:
        return c.call(rk.op_shard_map())
    finally:
        c.close()


def replica_counts(m, nodes):
    cnt = {n: 0 for n in nodes}
    for sh, (voters, learners) in m.map_shards.items():
        for n in voters + learners:
            cnt[n] = cnt.get(n, 0) + 1
    return cnt


def wait_balanced(cl, nodes, timeout=75.0):
    """Waits until the map puts replicas on `nodes` within one of each other
    (no learners left), every running node hosts exactly the shards the map
    gives it, and the shards' leaders (agreed by every node) are spread
    within one over `nodes`. Returns (replica counts, leader counts)."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            m = shard_map(cl, nodes[0])
            hosted = {i: sorted(s["shard"] for s in cl.status(i).shards)
                      for i in cl.procs}
            leaders = cl.leaders()
        except (OSError, AssertionError) as e:
            last = str(e)
            continue
        cnt = replica_counts(m, nodes)
        want = {i: sorted(sh for sh, (v, l) in m.map_shards.items()
                          if i in v + l) for i in cl.procs}
        lc = {n: 0 for n in nodes}
        for sh, l in leaders.items():
            lc[l] = lc.get(l, 0) + 1
        last = (m.epoch, cnt, lc, len(leaders))
        if any(l for v, l in m.map_shards.values()):
            continue
        if set(cnt) - set(nodes) or max(cnt.values()) - min(cnt.values()) > 1:
            continue
        if hosted != want or len(leaders) != len(m.map_shards):
            continue
        if set(lc) - set(nodes) or max(lc.values()) - min(lc.values()) > 1:
            continue
        return cnt, lc
    raise AssertionError("not balanced within %.0fs: %s" % (timeout, last))
