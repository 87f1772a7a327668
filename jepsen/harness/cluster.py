"""Cluster control: ringkvd nodes on their own loopback addresses.

Node i (1-based) listens on 127.A.B.(10+i) for clients, peers and metrics,
where 127.A.B is this run's own loopback subnet (drawn from the pid, or
RINGKV_JEPSEN_NET), so that concurrent runs never share an address;
its outgoing peer connections carry that source address, so the network
nemeses can tell the nodes apart with iptables. With `proxy=True` every
node's advertised peer address is 127.A.B.(40+i) on the same port, where a
userspace TCP proxy (DelayProxy) forwards to the node and can add delay and
jitter; the proxy binds its outgoing leg to the caller's address, so a
partition rule still sees node i -> node j.
"""

import json
import os
import random
import selectors
import signal
import socket
import subprocess
import threading
import time

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


def _run_net():
    """The first three octets of this run's loopback addresses: from
    RINGKV_JEPSEN_NET (e.g. "127.0.0") or from the pid, never 127.0.0."""
    env = os.environ.get("RINGKV_JEPSEN_NET")
    if env:
        parts = env.split(".")
        if (len(parts) != 3 or parts[0] != "127" or
                not all(p.isdigit() and 0 <= int(p) <= 255 for p in parts)):
            raise SystemExit("RINGKV_JEPSEN_NET must look like 127.X.Y, got %r"
                             % env)
        return env
    pid = os.getpid()
    return "127.%d.%d" % (1 + pid % 254, (pid // 254) % 256)


RUN_NET = _run_net()


def node_ip(i):
    return "%s.%d" % (RUN_NET, 10 + i)


def proxy_ip(i):
    return "%s.%d" % (RUN_NET, 40 + i)


def free_ports(n_nodes, count=3):
    """`count` port numbers free on every node address (and proxy
    address), drawn from the pid so that parallel runs do not collide."""
    rnd = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        base = rnd.randrange(21000, 59000)
        ports = [base + k for k in range(count)]
        ok = True
        for i in range(1, n_nodes + 1):
            for ip in (node_ip(i), proxy_ip(i)):
                for p in ports:
                    s = socket.socket()
                    try:
                        s.bind((ip, p))
                    except OSError:
                        ok = False
                    finally:
                        s.close()
        if ok:
            return ports
    raise RuntimeError("no free ports on the node addresses")


class Node:
    def __init__(self, cluster, i):
        self.c = cluster
        self.id = i
        self.ip = node_ip(i)
        self.proc = None
        self.paused = False
        self.faketime = None  # a libfaketime spec ("+5s", "+0 x1.1")
        self.removed = False
        self.join = None  # a node that joined keeps joining on restart

    @property
    def client_addr(self):
        return "%s:%d" % (self.ip, self.c.client_port)

    @property
    def peer_addr(self):
        """The address other nodes dial (the proxy when there is one)."""
        ip = proxy_ip(self.id) if self.c.proxy else self.ip
        return "%s:%d" % (ip, self.c.peer_port)

    @property
    def data_dir(self):
        return os.path.join(self.c.outdir, "data", "n%d" % self.id)

    @property
    def log_path(self):
        return os.path.join(self.c.outdir, "logs", "n%d.log" % self.id)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def args(self, join=None):
        c = self.c
        a = [c.binary, "--id", str(self.id),
             "--listen", self.client_addr,
             "--peer-listen", "%s:%d" % (self.ip, c.peer_port),
             "--metrics-listen", "%s:%d" % (self.ip, c.metrics_port),
             "--data-dir", self.data_dir,
             "--shards", str(c.shards),
             "--election-ms", "600", "--heartbeat-ms", "100",
             "--tick-ms", "50"]
        if join:
            a += ["--join", join]
        else:
            a += ["--initial-cluster", c.initial_cluster(),
                  "--initial-cluster-clients", c.initial_clients()]
        return a + list(c.server_flags)

    def start(self, join=None):
        self.join = join or self.join
        join = self.join
        os.makedirs(self.data_dir, exist_ok=True)
        env = dict(os.environ)
        if self.faketime:
            env["LD_PRELOAD"] = FAKETIME_LIB
            env["FAKETIME"] = self.faketime
            env["FAKETIME_NO_CACHE"] = "1"
        log = open(self.log_path, "ab")
        log.write(("\n=== %s start%s\n" % (
            time.strftime("%H:%M:%S"),
            " under faketime %s" % self.faketime if self.faketime else ""))
            .encode())
        log.flush()
        self.proc = subprocess.Popen(self.args(join), stdout=log,
                                     stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env)
        log.close()
        self.paused = False
        self.c.save_state()

    def kill(self, sig=signal.SIGKILL):
        if self.proc is None:
            return
        if self.paused:
            self.proc.send_signal(signal.SIGCONT)
        self.proc.send_signal(sig)
        self.reap(20)

    def reap(self, timeout):
        """Waits for the process to exit (SIGKILL after `timeout` s)."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None
        self.paused = False

    def pause(self):
        if self.alive():
            self.proc.send_signal(signal.SIGSTOP)
            self.paused = True

    def resume(self):
        if self.alive() and self.paused:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False


class Cluster:
    def __init__(self, binary, cli, outdir, n_nodes, shards, server_flags=(),
                 proxy=False):
        self.binary = binary
        self.cli = cli
        self.outdir = outdir
        self.shards = shards
        self.server_flags = list(server_flags)
        self.proxy = proxy
        self.client_port, self.peer_port, self.metrics_port = \
            free_ports(n_nodes)
        self.founders = n_nodes
        self.nodes = {i: Node(self, i) for i in range(1, n_nodes + 1)}
        self.delay = None
        os.makedirs(os.path.join(outdir, "logs"), exist_ok=True)
        if proxy:
            self.delay = DelayProxy(self)

    def add_node(self):
        """A new node with the next id, if its ports are free on its own
        address (and the proxy's); None otherwise. Not started."""
        i = max(self.nodes) + 1
        if 10 + i >= 40:
            return None
        ports = (self.client_port, self.peer_port, self.metrics_port)
        for ip in (node_ip(i), proxy_ip(i)):
            for p in ports:
                s = socket.socket()
                try:
                    s.bind((ip, p))
                except OSError:
                    return None
                finally:
                    s.close()
        n = Node(self, i)
        self.nodes[i] = n
        if self.delay:
            self.delay.listen(i)
        return n

    def initial_cluster(self):
        return ",".join("%d=%s" % (i, n.peer_addr)
                        for i, n in sorted(self.nodes.items())
                        if i <= self.founders)

    def initial_clients(self):
        return ",".join("%d=%s" % (i, n.client_addr)
                        for i, n in sorted(self.nodes.items())
                        if i <= self.founders)

    def endpoints(self):
        return ",".join(n.client_addr for n in self.nodes.values()
                        if not n.removed)

    def state_path(self):
        return os.path.join(STATE_DIR, "%d.json" % os.getpid())

    def save_state(self):
        """Pids of the nodes, so a later run can clean up after a crash."""
        os.makedirs(STATE_DIR, exist_ok=True)
        st = {"pids": [n.proc.pid for n in self.nodes.values() if n.proc],
              "data": os.path.join(self.outdir, "data")}
        tmp = self.state_path() + ".tmp"
        with open(tmp, "w") as f:
            json.dump(st, f)
        os.replace(tmp, self.state_path())

    def start(self):
        if self.delay:
            self.delay.start()
        for n in self.nodes.values():
            n.start()

    def stop(self):
        for n in self.nodes.values():
            n.resume()
            if n.proc is not None:
                n.proc.send_signal(signal.SIGTERM)
        for n in self.nodes.values():
            if n.proc is not None:
                n.reap(10)
        if self.delay:
            self.delay.stop()
        try:
            os.unlink(self.state_path())
        except OSError:
            pass

    def ringkv(self, *args, timeout=10):
        """Runs the ringkv CLI; returns (exit code, stdout + stderr)."""
        cmd = [self.cli, "--endpoints", self.endpoints(), "--timeout",
               "%ds" % max(1, timeout - 2)] + list(args)
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=timeout,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return 124, "timed out"
        return r.returncode, (r.stdout + r.stderr).decode(errors="replace")

    def status(self):
        rc, out = self.ringkv("-o", "json", "status", timeout=8)
        if rc not in (0, 3):
            return None
        try:
            return json.loads(out)
        except ValueError:
            return None

    def leaders(self):
        """{shard: leader id} agreed by every node that answered; a shard is
        missing while they disagree or know no leader."""
        st = self.status()
        views = {}
        for nd in (st or {}).get("nodes", []):
            for s in nd.get("shards", []):
                views.setdefault(s.get("shard"), set()).add(s.get("leader"))
        return {sh: ls.pop() for sh, ls in views.items()
                if len(ls) == 1 and 0 not in ls and None not in ls}

    def wait_healthy(self, timeout):
        """Waits until every shard (and the meta shard) has a leader agreed
        by every live node and every live node answers."""
        deadline = time.time() + timeout
        live = [n for n in self.nodes.values() if n.alive()]
        while time.time() < deadline:
            st = self.status() or {}
            answered = [nd for nd in st.get("nodes", [])
                        if nd.get("reachable") and
                        nd.get("shards")]
            ls = self.leaders()
            if len(ls) >= self.shards + 1 and len(answered) >= len(live):
                return ls
            time.sleep(0.3)
        return None


STATE_DIR = "/tmp/ringkv-jepsen-state"


def cleanup_stale():
    """Kills the nodes of earlier runs whose harness died without cleaning
    up (their state file names a dead pid)."""
    if not os.path.isdir(STATE_DIR):
        return []
    done = []
    for name in os.listdir(STATE_DIR):
        if not name.endswith(".json"):
            continue
        pid = int(name[:-5]) if name[:-5].isdigit() else 0
        if pid and os.path.exists("/proc/%d" % pid):
            continue
        path = os.path.join(STATE_DIR, name)
        try:
            with open(path) as f:
                st = json.load(f)
        except (OSError, ValueError):
            st = {}
        for p in st.get("pids", []):
            try:
                with open("/proc/%d/cmdline" % p, "rb") as f:
                    cmd = f.read().decode(errors="replace")
            except OSError:
                continue
            if "ringkvd" in cmd and st.get("data", "\0") in cmd:
                os.kill(p, signal.SIGCONT)
                os.kill(p, signal.SIGKILL)
                done.append(p)
        os.unlink(path)
    return done


class DelayProxy:
    """One listener per node on its proxy address; each accepted peer
    connection is forwarded to the node, every chunk held for
    delay + uniform(0, jitter) ms, in order. One thread, one selector."""

    def __init__(self, cluster):
        self.c = cluster
        self.delay_ms = 0
        self.jitter_ms = 0
        self.rnd = random.Random(1)
        self.sel = selectors.DefaultSelector()
        self.running = False
        self.thread = None
        self.queue = []  # (due, seq, dst socket, bytes)
        self.seq = 0
        self.pairs = {}

    def set(self, delay_ms, jitter_ms):
        self.delay_ms, self.jitter_ms = delay_ms, jitter_ms

    def start(self):
        for i in self.c.nodes:
            self.listen(i)
        self.running = True
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def listen(self, i):
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((proxy_ip(i), self.c.peer_port))
        ls.listen(64)
        ls.setblocking(False)
        self.sel.register(ls, selectors.EVENT_READ, ("listen", i))

    def stop(self):
        self.running = False
        if self.thread:
            self.thread.join(timeout=5)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()

    def accept(self, ls, i):
        try:
            s, (src, _) = ls.accept()
        except OSError:
            return
        out = socket.socket()
        try:
            out.bind((src, 0))  # keep the caller's address for iptables
            out.settimeout(2)
            out.connect((node_ip(i), self.c.peer_port))
        except OSError:
            s.close()
            out.close()
            return
        for x in (s, out):
            x.setblocking(False)
            x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pairs[s], self.pairs[out] = out, s
        self.sel.register(s, selectors.EVENT_READ, ("data", 0))
        self.sel.register(out, selectors.EVENT_READ, ("data", 0))

    def close_pair(self, s):
        other = self.pairs.pop(s, None)
        for x in (s, other):
            if x is None:
                continue
            self.pairs.pop(x, None)
            try:
                self.sel.unregister(x)
            except (KeyError, ValueError):
                pass
            x.close()

    def loop(self):
        last_due = {}
        while self.running:
            now = time.monotonic()
            wait = 0.05
            if self.queue:
                wait = max(0.0, min(wait, self.queue[0][0] - now))
            for key, _ in self.sel.select(timeout=wait):
                kind, i = key.data
                if kind == "listen":
                    self.accept(key.fileobj, i)
                    continue
                s = key.fileobj
                try:
                    data = s.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.close_pair(s)
                    continue
                dst = self.pairs.get(s)
                d = self.delay_ms + self.rnd.uniform(0, self.jitter_ms)
                # Order is kept per stream: never before the previous chunk.
                due = max(time.monotonic() + d / 1000.0,
                          last_due.get(dst, 0))
                last_due[dst] = due
                self.seq += 1
                self.queue.append((due, self.seq, dst, data))
                self.queue.sort(key=lambda e: (e[0], e[1]))
            now = time.monotonic()
            while self.queue and self.queue[0][0] <= now:
                _, _, dst, data = self.queue.pop(0)
                if dst not in self.pairs:
                    continue
                try:
                    dst.setblocking(True)
                    dst.settimeout(1)
                    dst.sendall(data)
                    dst.setblocking(False)
                except OSError:
                    self.close_pair(dst)
