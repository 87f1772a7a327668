"""Faults: the network (iptables), processes (kill, pause), clocks
(libfaketime), delay (the proxy), membership and shard splits, and the
schedule that injects them. Every fault is an interval with a start and an
end event in the history."""

import os
import random
import re
import signal
import subprocess
import threading
import time

from cluster import node_ip, proxy_ip

PARTITION_MODES = ["halves", "leader", "ring", "one-way"]
NEMESES = ["kill", "pause", "partition", "loss", "delay", "clock",
           "membership", "split", "transfer"]
CHAIN_PREFIX = "rkj-"


def ipt(*args, check=True):
    r = subprocess.run(["iptables", "-w", "5"] + list(args),
                       capture_output=True, stdin=subprocess.DEVNULL)
    if check and r.returncode != 0:
        raise RuntimeError("iptables %s: %s" % (" ".join(args),
                                                r.stderr.decode().strip()))
    return r


def cleanup_stale_chains():
    """Removes the chains (and their jumps) of runs whose harness is gone."""
    r = ipt("-S", check=False)
    removed = []
    for line in r.stdout.decode().splitlines():
        m = re.match(r"^-N (%s(\d+))$" % CHAIN_PREFIX, line)
        if m and not os.path.exists("/proc/%s" % m.group(2)):
            Net.remove_chain(m.group(1))
            removed.append(m.group(1))
    return removed


class Net:
    """Rules on the peer traffic between node addresses, in a chain of its
    own (rkj-<pid>) that INPUT jumps to; nothing else is ever touched."""

    def __init__(self, cluster):
        self.c = cluster
        self.chain = "%s%d" % (CHAIN_PREFIX, os.getpid())
        self.installed = False

    def install(self):
        ipt("-N", self.chain)
        ipt("-I", "INPUT", "-j", self.chain)
        self.installed = True

    @staticmethod
    def remove_chain(chain):
        while ipt("-D", "INPUT", "-j", chain, check=False).returncode == 0:
            pass
        ipt("-F", chain, check=False)
        ipt("-X", chain, check=False)

    def teardown(self):
        if self.installed:
            Net.remove_chain(self.chain)
            self.installed = False

    def heal(self):
        if self.installed:
            ipt("-F", self.chain)

    def _addrs(self, i):
        return [node_ip(i)] + ([proxy_ip(i)] if self.c.proxy else [])

    def drop(self, src, dst, extra=()):
        """Drops peer traffic from node src to node dst (one direction)."""
        port = str(self.c.peer_port)
        for s in self._addrs(src):
            for d in self._addrs(dst):
                ipt("-A", self.chain, "-s", s, "-d", d, "-p", "tcp",
                    "-m", "multiport", "--ports", port, *extra, "-j", "DROP")

    def partition(self, groups):
        """Cuts every link between different groups, both ways."""
        for g in groups:
            for h in groups:
                if g is h:
                    continue
                for a in g:
                    for b in h:
                        self.drop(a, b)

    def loss(self, p):
        ipt("-A", self.chain, "-p", "tcp", "-m", "multiport", "--ports",
            str(self.c.peer_port), "-m", "statistic", "--mode", "random",
            "--probability", "%.3f" % p, "-j", "DROP")


class Nemesis:
    """Runs faults from `kinds` in turns (healthy gap, fault, heal) until
    stopped, recording events with record(f, value, phase)."""

    def __init__(self, cluster, net, kinds, record, seed, interval,
                 partition_modes=None):
        self.c = cluster
        self.net = net
        self.kinds = kinds
        self.record = record
        self.rnd = random.Random(seed)
        self.interval = interval
        self.stop_ev = threading.Event()
        self.current = None
        self.killed = set()
        self.restarted = []
        self.n_splits = 0
        self.thread = None
        self.partition_modes = partition_modes or PARTITION_MODES

    # --------------------------------------------------------- helpers

    def ids(self):
        return [i for i, n in self.c.nodes.items() if not n.removed]

    def minority(self):
        ids = self.ids()
        k = self.rnd.randint(1, max(1, (len(ids) - 1) // 2))
        return sorted(self.rnd.sample(ids, k))

    def shard_leader(self):
        ls = {s: l for s, l in self.c.leaders().items() if s != 0}
        if not ls:
            return None, None
        shard = self.rnd.choice(sorted(ls))
        return shard, ls[shard]

    # --------------------------------------------------------- faults

    def start_fault(self, kind):
        """Starts one fault; returns (description, end function)."""
        return getattr(self, "f_" + kind)()

    def f_kill(self):
        victims = self.minority()
        for i in victims:
            self.c.nodes[i].kill()
            self.killed.add(i)

        def end():
            for i in victims:
                self.c.nodes[i].start()
                self.killed.discard(i)
                self.restarted.append(i)
        return "kill %s" % victims, end

    def f_pause(self):
        if self.rnd.random() < 0.5:
            _, leader = self.shard_leader()
            victims = [leader] if leader else self.minority()
        else:
            victims = self.minority()
        for i in victims:
            self.c.nodes[i].pause()

        def end():
            for i in victims:
                self.c.nodes[i].resume()
        return "pause %s" % victims, end

    def f_partition(self):
        ids = self.ids()
        mode = self.rnd.choice(self.partition_modes)
        if mode == "leader":
            shard, leader = self.shard_leader()
            if leader is None:
                mode = "halves"
            else:
                self.net.partition([[leader],
                                    [i for i in ids if i != leader]])
                desc = "partition isolate leader n%d of shard %d" % (
                    leader, shard)
        if mode == "halves":
            sh = ids[:]
            self.rnd.shuffle(sh)
            k = len(sh) // 2
            groups = [sorted(sh[:k]), sorted(sh[k:])]
            self.net.partition(groups)
            desc = "partition halves %s" % groups
        elif mode == "ring":
            # Every node sees a majority, no two the same: i talks only to
            # its ring neighbours within distance n//2.
            sh = ids[:]
            self.rnd.shuffle(sh)
            n = len(sh)
            k = (n // 2 + 1) // 2  # neighbours on each side
            for a in range(n):
                for b in range(n):
                    d = min((a - b) % n, (b - a) % n)
                    if d > k:
                        self.net.drop(sh[a], sh[b])
            desc = "partition majorities ring %s" % sh
        elif mode == "one-way":
            victim = self.rnd.choice(ids)
            # The victim hears the others, but nothing it sends arrives.
            for i in ids:
                if i != victim:
                    self.net.drop(victim, i)
            desc = "partition one-way: n%d's messages dropped" % victim
        return desc, self.net.heal

    def f_loss(self):
        p = self.rnd.choice([0.1, 0.2, 0.3])
        self.net.loss(p)
        return "loss %.0f%% of peer packets" % (p * 100), self.net.heal

    def f_delay(self):
        if not self.c.delay:
            return "delay unavailable (no proxy)", lambda: None
        d = self.rnd.choice([20, 50, 100])
        j = self.rnd.choice([10, 50, 100])
        self.c.delay.set(d, j)
        return "delay %dms + jitter %dms on peer links" % (d, j), \
            lambda: self.c.delay.set(0, 0)

    def f_clock(self):
        i = self.rnd.choice(self.ids())
        spec = self.rnd.choice(["+%ds" % self.rnd.randint(1, 60),
                                "-%ds" % self.rnd.randint(1, 60),
                                "+0 x1.05", "+0 x0.95", "+30s x1.02"])
        n = self.c.nodes[i]
        n.kill()
        n.faketime = spec
        n.start()

        def end():
            n.kill()
            n.faketime = None
            n.start()
        return "clock n%d faketime '%s'" % (i, spec), end

    def f_membership(self):
        """Removes a node (its process stops), then at the end adds a new
        node with a fresh id (ids are never reused) that joins empty."""
        ids = self.ids()
        victim = self.rnd.choice(ids)
        rc, out = self.c.ringkv("members", "remove", str(victim),
                                timeout=12)
        out = out.strip().replace("\n", " ")[:200]
        if rc != 0:
            return ("membership remove n%d refused (rc %d): %s" %
                    (victim, rc, out), None)
        old = self.c.nodes[victim]
        old.removed = True
        old.kill(signal.SIGTERM)

        def end():
            n = self.c.add_node()
            if n is None:
                self.record("membership", "no address left for a new node",
                            "info")
                return
            # The address the node registers itself with when it joins (its
            # --peer-listen; a joiner is not behind the delay proxy): the
            # same node asked twice, so the join is answered as a retry.
            rc2, out2 = self.c.ringkv("members", "add", str(n.id),
                                      n.listen_peer_addr, n.client_addr,
                                      timeout=12)
            out2 = out2.strip().replace("\n", " ")[:200]
            if rc2 != 0:
                n.removed = True
                self.record("membership", "add n%d refused (rc %d): %s" % (
                    n.id, rc2, out2), "info")
                return
            others = [x for x in self.ids() if x != n.id]
            n.start(join=self.c.nodes[others[0]].client_addr)
            self.record("membership", "add n%d: %s" % (n.id, out2), "info")
            err = n.exited_at_start()
            if err:
                self.record("membership", "n%d did not start: %s" % (n.id, err),
                            "info")
        return "membership remove n%d: %s" % (victim, out), end

    def f_transfer(self):
        """Hands a shard's leadership to the node restarted last (or a
        random one): a new leader that may still be catching up."""
        shard, leader = self.shard_leader()
        if shard is None:
            return "transfer: no shard leader known", None
        # Only nodes that host a replica of the shard can take it.
        hosts = {nd.get("id") for nd in (self.c.status() or {}).get(
            "nodes", []) if any(x.get("shard") == shard
                                for x in nd.get("shards", []))}
        cands = [i for i in self.ids() if i != leader and i in hosts and
                 self.c.nodes[i].alive()]
        if not cands:
            return "transfer: no other live node", None
        fresh = [i for i in cands if i in self.restarted]
        to = fresh[-1] if fresh else self.rnd.choice(cands)
        rc, out = self.c.ringkv("leader", "transfer", str(shard), "--to",
                                str(to), timeout=12)
        out = out.strip().replace("\n", " ")[:200]
        if rc != 0:
            return "transfer shard %d to n%d refused (rc %d): %s" % (
                shard, to, rc, out), None
        return "transfer shard %d n%d -> n%d: %s" % (shard, leader, to,
                                                     out), lambda: None

    def f_split(self):
        shard, leader = self.shard_leader()
        if shard is None:
            shard = 1
        rc, out = self.c.ringkv("shard", "split", str(shard), timeout=12)
        out = out.strip().replace("\n", " ")[:200]
        if rc != 0:
            return "split shard %d refused (rc %d): %s" % (shard, rc, out), \
                None
        # Every second split also kills the donor's leader the moment the
        # split is recorded: the next leader must carry it out, and the
        # node must converge when it comes back at the fault's end.
        self.n_splits += 1
        if (leader is not None and self.n_splits % 2 == 0 and
                leader not in self.killed and self.c.nodes[leader].alive()):
            self.c.nodes[leader].kill()
            self.killed.add(leader)

            def end():
                self.c.nodes[leader].start()
                self.killed.discard(leader)
                self.restarted.append(leader)
            return "split shard %d: %s; killed its leader n%d" % (
                shard, out, leader), end
        return "split shard %d: %s" % (shard, out), lambda: None

    # --------------------------------------------------------- schedule

    def run(self):
        order = []
        while not self.stop_ev.is_set():
            if self.stop_ev.wait(self.rnd.uniform(*self.interval)):
                break
            if not order:  # every kind once per round, in random order
                order = self.kinds[:]
                self.rnd.shuffle(order)
            kind = order.pop()
            try:
                desc, end = self.start_fault(kind)
            except Exception as e:  # a fault that cannot start is noted
                self.record(kind, "could not start: %s" % e, "info")
                continue
            if end is None:  # refused: recorded as :info, the run goes on
                self.record(kind, desc, "info")
                continue
            self.record(kind, desc, "start")
            self.current = desc
            self.stop_ev.wait(self.rnd.uniform(*self.interval))
            try:
                end()
            finally:
                self.current = None
                self.record(kind, desc, "stop")

    def start(self):
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def stop(self):
        self.stop_ev.set()
        if self.thread:
            self.thread.join(timeout=120)

    def heal_all(self):
        """Undoes whatever a fault left behind (after stop())."""
        self.net.heal()
        if self.c.delay:
            self.c.delay.set(0, 0)
        for n in self.c.nodes.values():
            if n.removed:
                continue
            n.resume()
            if n.faketime:
                n.kill()
                n.faketime = None
            if not n.alive():
                n.start()
