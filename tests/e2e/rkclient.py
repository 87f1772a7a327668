"""A tiny ringkv test client: framed protobuf Request/Response over TCP.

Python 3 standard library only. It speaks proto/ringkv.proto by field number
(a hand-written protobuf reader/writer, so no generated code is needed) and adds
the helpers the end-to-end tests need: a process cluster on loopback ports,
bounded waits, and leader-following writes.
"""

import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

STATUS = ["OK", "NOT_FOUND", "NOT_LEADER", "WRONG_SHARD", "CAS_MISMATCH",
          "TIMEOUT", "UNAVAILABLE", "INVALID_ARGUMENT", "TOO_LARGE",
          "INTERNAL"]

# ------------------------------------------------------------ protobuf


def _varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _key(num, wt):
    return _varint(num << 3 | wt)


def f_u64(num, v):
    return _key(num, 0) + _varint(v) if v else b""


def f_bytes(num, b, always=False):
    if isinstance(b, str):
        b = b.encode()
    if not b and not always:
        return b""
    return _key(num, 2) + _varint(len(b)) + b


def parse(buf):
    """Returns {field: [values]}: ints for varints, bytes for the rest."""
    out = {}
    i = 0
    n = len(buf)
    while i < n:
        tag, i = _read_varint(buf, i)
        num, wt = tag >> 3, tag & 7
        if wt == 0:
            v, i = _read_varint(buf, i)
        elif wt == 2:
            ln, i = _read_varint(buf, i)
            if i + ln > n:
                raise ValueError("truncated field")
            v = bytes(buf[i:i + ln])
            i += ln
        elif wt == 1:
            v = buf[i:i + 8]
            i += 8
        elif wt == 5:
            v = buf[i:i + 4]
            i += 4
        else:
            raise ValueError("bad wire type %d" % wt)
        out.setdefault(num, []).append(v)
    return out


def _read_varint(buf, i):
    v = 0
    shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        v |= (b & 0x7F) << shift
        if not b & 0x80:
            return v, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _one(fields, num, default=0):
    vals = fields.get(num)
    return vals[-1] if vals else default


NODE_STATES = ["ACTIVE", "JOINING", "LEAVING", "REMOVED"]
ROLES = ["follower", "pre-candidate", "candidate", "leader", "none"]


class Response:
    def __init__(self, raw):
        f = parse(raw)
        self.raw = raw
        self.request_id = _one(f, 1)
        code = _one(f, 2)
        self.status = STATUS[code] if code < len(STATUS) else "INTERNAL"
        self.message = _one(f, 3, b"").decode()
        hint = parse(_one(f, 4, b""))
        self.leader_id = _one(hint, 1)
        self.leader_hint = _one(hint, 2, b"").decode()
        self.epoch = _one(f, 5)
        self.found = False
        self.value = None
        self.revision = 0
        self.prev_revision = 0
        self.duplicate = False
        self.items = []
        self.more = False
        self.shards = []
        self.nodes = []
        self.points = []
        self.n_shards = 0
        self.result = None
        if 10 in f:
            self.result = "get"
            g = parse(_one(f, 10, b""))
            self.found = bool(_one(g, 1))
            self.value = _one(g, 2, b"")
            self.revision = _one(g, 3)
        if 11 in f:
            self.result = "put"
            w = parse(_one(f, 11, b""))
            self.revision = _one(w, 1)
            self.prev_revision = _one(w, 2)
            self.duplicate = bool(_one(w, 3))
        if 12 in f:
            self.result = "delete"
            w = parse(_one(f, 12, b""))
            self.found = bool(_one(w, 1))
            self.revision = _one(w, 2)
            self.prev_revision = _one(w, 3)
            self.duplicate = bool(_one(w, 4))
        if 13 in f:
            self.result = "cas"
            w = parse(_one(f, 13, b""))
            self.revision = _one(w, 1)
            self.found = bool(_one(w, 2))
            self.value = _one(w, 3, b"")
            self.duplicate = bool(_one(w, 4))
        if 14 in f:
            self.result = "scan"
            sc = parse(_one(f, 14, b""))
            for kv in sc.get(1, []):
                k = parse(kv)
                self.items.append((_one(k, 1, b""), _one(k, 2, b""),
                                   _one(k, 3)))
            self.more = bool(_one(sc, 2))
        if 15 in f:
            self.result = "status"
            st = parse(_one(f, 15, b""))
            self.n_shards = _one(st, 5)
            for raw_si in st.get(8, []):
                si = parse(raw_si)
                role = _one(si, 6)
                self.shards.append({
                    "shard": _one(si, 1), "leader": _one(si, 2),
                    "term": _one(si, 3), "commit": _one(si, 4),
                    "applied": _one(si, 5),
                    "role": ROLES[role] if role < len(ROLES) else "?"})
            self.nodes = _nodes(st.get(9, []))
        if 16 in f:
            self.result = "shard_map"
            m = parse(_one(f, 16, b""))
            for raw_p in m.get(3, []):
                p = parse(raw_p)
                self.points.append((_one(p, 1), _one(p, 2)))
            self.n_shards = sum(1 for raw in m.get(4, [])
                                if _one(parse(raw), 1) != 0)
            self.nodes = _nodes(m.get(5, []))
            self.epoch_map = _one(m, 2)
            self.node_states = {}
            for raw in m.get(5, []):
                nd = parse(raw)
                self.node_states[_one(nd, 1)] = NODE_STATES[_one(nd, 4)]
            self.map_shards = {}
            for raw in m.get(4, []):
                si = parse(raw)
                self.map_shards[_one(si, 1)] = (_packed(si.get(2, [])),
                                                _packed(si.get(3, [])))
        if 17 in f:
            self.result = "members"
            self.nodes = _nodes(parse(_one(f, 17, b"")).get(1, []))
        if 18 in f:
            self.result = "admin"

    def __repr__(self):
        return "<Response id=%d %s %s>" % (self.request_id, self.status,
                                           self.message)


def _packed(vals):
    """Values of a repeated varint field, packed (bytes) or not (ints)."""
    out = []
    for v in vals:
        if isinstance(v, int):
            out.append(v)
            continue
        i = 0
        while i < len(v):
            x, i = _read_varint(v, i)
            out.append(x)
    return out


def _nodes(raws):
    out = []
    for raw in raws:
        nd = parse(raw)
        out.append((_one(nd, 1), _one(nd, 3, b"").decode()))
    return out


def request(rid, op_field, op_body, client_id=0, seq=0, epoch=0,
            consistency=0, timeout_ms=0):
    return (f_u64(1, rid) + f_u64(2, client_id) + f_u64(3, seq) +
            f_u64(4, epoch) + f_u64(5, consistency) + f_u64(6, timeout_ms) +
            f_bytes(op_field, op_body, always=True))


def op_get(key):
    return 10, f_bytes(1, key)


def op_put(key, value):
    return 11, f_bytes(1, key) + f_bytes(2, value)


def op_delete(key):
    return 12, f_bytes(1, key)


def op_cas(key, value, expect_value=None, expect_revision=None,
           expect_absent=False, delete_on_match=False):
    body = f_bytes(1, key)
    if expect_absent:
        body += _key(4, 0) + _varint(1)
    elif expect_revision is not None:
        body += _key(3, 0) + _varint(expect_revision)
    else:
        body += f_bytes(2, expect_value or b"", always=True)
    return 13, body + f_bytes(5, value) + f_u64(6, int(delete_on_match))


def op_scan(shard, prefix=b"", limit=0, start_after=b"", keys_only=False):
    return 14, (f_bytes(1, prefix) + f_bytes(2, start_after) +
                f_u64(3, limit) + f_u64(4, shard) + f_u64(5, int(keys_only)))


def op_status():
    return 15, b""


def op_shard_map():
    return 16, b""


def op_member_list():
    return 17, b""


def op_member_add(node_id, peer_addr="", client_addr="", shard=0,
                  learner=False):
    return 18, (f_u64(1, node_id) + f_bytes(2, peer_addr.encode()) +
                f_bytes(3, client_addr.encode()) + f_u64(4, shard) +
                f_u64(5, int(learner)))


def op_member_remove(node_id, shard=0):
    return 19, f_u64(1, node_id) + f_u64(2, shard)


def op_transfer_leader(shard, to_node=0):
    return 20, _key(1, 0) + _varint(shard) + f_u64(2, to_node)


# ------------------------------------------------------------ transport


class Conn:
    """One connection; send() pipelines, recv() returns the next frame."""

    def __init__(self, port, timeout=10.0, host="127.0.0.1"):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.next_id = 1

    def close(self):
        self.sock.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, op, client_id=0, seq=0, epoch=0, consistency=0,
             timeout_ms=0):
        rid = self.next_id
        self.next_id += 1
        field, body = op
        msg = request(rid, field, body, client_id, seq, epoch, consistency,
                      timeout_ms)
        self.sock.sendall(struct.pack(">I", len(msg)) + msg)
        return rid

    def recv(self):
        while len(self.buf) < 4:
            self._fill()
        n = struct.unpack(">I", self.buf[:4])[0]
        while len(self.buf) < 4 + n:
            self._fill()
        raw = self.buf[4:4 + n]
        self.buf = self.buf[4 + n:]
        return Response(raw)

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the node")
        self.buf += chunk

    def call(self, op, **kw):
        rid = self.send(op, **kw)
        r = self.recv()
        assert r.request_id == rid, (r.request_id, rid)
        return r


# ------------------------------------------------------------ cluster


def free_port_base(n_nodes):
    """A base port P with P+i (clients), P+100+i (peers), P+200+i (metrics)
    free for i in 1..n, drawn from the pid so parallel tests do not
    collide."""
    for attempt in range(200):
        base = 20000 + ((os.getpid() * 7 + attempt * 331) % 400) * 100
        ok = True
        for i in range(1, n_nodes + 1):
            for p in (base + i, base + 100 + i, base + 200 + i):
                s = socket.socket()
                try:
                    s.bind(("127.0.0.1", p))
                except OSError:
                    ok = False
                finally:
                    s.close()
        if ok:
            return base
    raise RuntimeError("no free port range")


class Cluster:
    def __init__(self, binary, workdir, n_nodes=3, shards=2, extra=()):
        self.binary = binary
        self.workdir = workdir
        self.n = n_nodes
        self.shards = shards
        self.extra = list(extra)
        self.base = free_port_base(n_nodes)
        self.procs = {}

    def client_port(self, i):
        return self.base + i

    def metrics_port(self, i):
        return self.base + 200 + i

    def args(self, i):
        if i > self.n:
            # A node beyond the founding ones joins through node 1's (or
            # self.join_via's) client port.
            return [self.binary, "--id", str(i),
                    "--listen", "127.0.0.1:%d" % self.client_port(i),
                    "--peer-listen", "127.0.0.1:%d" % (self.base + 100 + i),
                    "--metrics-listen", "127.0.0.1:%d" % self.metrics_port(i),
                    "--data-dir", os.path.join(self.workdir, "node%d" % i),
                    "--join", "127.0.0.1:%d" % self.client_port(
                        getattr(self, "join_via", 1)),
                    "--election-ms", "600", "--heartbeat-ms", "100",
                    "--tick-ms", "50"] + self.extra
        ic = ",".join("%d=127.0.0.1:%d" % (j, self.base + 100 + j)
                      for j in range(1, self.n + 1))
        icc = ",".join("%d=127.0.0.1:%d" % (j, self.base + j)
                       for j in range(1, self.n + 1))
        return [self.binary, "--id", str(i),
                "--listen", "127.0.0.1:%d" % self.client_port(i),
                "--peer-listen", "127.0.0.1:%d" % (self.base + 100 + i),
                "--metrics-listen", "127.0.0.1:%d" % self.metrics_port(i),
                "--data-dir", os.path.join(self.workdir, "node%d" % i),
                "--initial-cluster", ic, "--initial-cluster-clients", icc,
                "--shards", str(self.shards),
                "--election-ms", "600", "--heartbeat-ms", "100",
                "--tick-ms", "50"] + self.extra

    def start(self, i):
        log = open(os.path.join(self.workdir, "node%d.log" % i), "ab")
        self.procs[i] = subprocess.Popen(self.args(i), stdout=log,
                                         stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        log.close()

    def start_all(self):
        for i in range(1, self.n + 1):
            self.start(i)

    def kill(self, i, sig=signal.SIGKILL):
        p = self.procs.get(i)
        if p is None:
            return None
        p.send_signal(sig)
        rc = p.wait(timeout=20)
        del self.procs[i]
        return rc

    def stop_all(self):
        """SIGTERM every node; SIGKILL what does not exit in 10 s."""
        rcs = {}
        for i, p in list(self.procs.items()):
            p.send_signal(signal.SIGTERM)
        for i, p in list(self.procs.items()):
            try:
                rcs[i] = p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                rcs[i] = p.wait(timeout=10)
                rcs[i] = "hung"
            del self.procs[i]
        return rcs

    def alive(self, i):
        p = self.procs.get(i)
        return p is not None and p.poll() is None

    def log(self, i):
        with open(os.path.join(self.workdir, "node%d.log" % i), "rb") as f:
            return f.read().decode(errors="replace")

    def http(self, i, path):
        s = socket.create_connection(("127.0.0.1", self.metrics_port(i)),
                                     timeout=5)
        s.sendall(("GET %s HTTP/1.0\r\n\r\n" % path).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        head, _, body = data.partition(b"\r\n\r\n")
        return head.decode(), body.decode()

    def status(self, i):
        c = Conn(self.client_port(i), timeout=5)
        try:
            return c.call(op_status())
        finally:
            c.close()

    def leaders(self, nodes=None):
        """{shard: leader id} as agreed by the given live nodes (a shard is
        missing while they disagree or know no leader)."""
        views = {}
        for i in nodes or list(self.procs):
            try:
                st = self.status(i)
            except OSError:
                return {}
            for s in st.shards:
                views.setdefault(s["shard"], set()).add(s["leader"])
        return {sh: ls.pop() for sh, ls in views.items()
                if len(ls) == 1 and 0 not in ls}

    def wait_leaders(self, n_shards, timeout=60.0, nodes=None, exclude=()):
        """Waits until every shard has one leader agreed by `nodes` (default:
        every running node), among the running nodes minus `exclude`."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            ls = self.leaders(nodes)
            if len(ls) == n_shards and all(
                    l in self.procs and l not in exclude
                    for l in ls.values()):
                return ls
            time.sleep(0.1)
        raise AssertionError("no stable leaders within %.0fs: %s" %
                             (timeout, self.leaders(nodes)))


def call_leader(cluster, op, timeout=30.0, **kw):
    """Sends op to the node the NOT_LEADER hints point at, retrying on
    UNAVAILABLE/TIMEOUT/NOT_LEADER (same client_id/seq, so a write is
    applied once) until `timeout`."""
    deadline = time.time() + timeout
    node = next(iter(cluster.procs))
    last = None
    while time.time() < deadline:
        try:
            c = Conn(cluster.client_port(node), timeout=8)
            try:
                r = c.call(op, **kw)
            finally:
                c.close()
        except OSError as e:
            last = e
            live = list(cluster.procs)
            node = live[(live.index(node) + 1) % len(live)] \
                if node in live else live[0]
            time.sleep(0.1)
            continue
        last = r
        if r.status == "NOT_LEADER":
            if r.leader_id and r.leader_id in cluster.procs:
                node = r.leader_id
            else:
                live = list(cluster.procs)
                node = live[(live.index(node) + 1) % len(live)] \
                    if node in live else live[0]
                time.sleep(0.1)
            continue
        if r.status in ("UNAVAILABLE", "TIMEOUT"):
            time.sleep(0.1)
            continue
        return r
    raise AssertionError("no answer within %.0fs, last: %r" % (timeout, last))


# ------------------------------------------------------------ command line


def _main(argv):
    """rkclient.py [-e HOST:PORT] get K | put K V | del K | cas K OLD NEW |
    scan SHARD [PREFIX] | status | map | members"""
    import sys
    endpoint = "127.0.0.1:7001"
    if len(argv) > 2 and argv[1] == "-e":
        endpoint = argv[2]
        argv = [argv[0]] + argv[3:]
    if len(argv) < 2:
        print(_main.__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    ops = {
        "get": lambda: op_get(args[0]),
        "put": lambda: op_put(args[0], args[1]),
        "del": lambda: op_delete(args[0]),
        "cas": lambda: op_cas(args[0], args[2], expect_value=args[1]),
        "scan": lambda: op_scan(int(args[0]), args[1] if len(args) > 1
                                else ""),
        "members": op_member_list,
        "status": op_status,
        "map": op_shard_map,
    }
    if cmd not in ops:
        print(_main.__doc__)
        return 2
    try:
        op = ops[cmd]()
    except IndexError:
        print(_main.__doc__)
        return 2
    write = cmd in ("put", "del", "cas")
    kw = {"client_id": (os.getpid() << 20) | int(time.time()) & 0xFFFFF,
          "seq": 1} if write else {}
    host_port = endpoint
    for _ in range(5):
        host, port = host_port.rsplit(":", 1)
        c = Conn(int(port), host=host.strip("[]"))
        r = c.call(op, **kw)
        c.close()
        if r.status == "NOT_LEADER" and r.leader_hint:
            host_port = r.leader_hint
            continue
        break
    if cmd == "get" and r.status == "OK":
        sys.stdout.write(r.value.decode(errors="replace") + "\n")
    elif cmd == "scan" and r.status == "OK":
        for k, v, rev in r.items:
            print("%s = %s (rev %d)" % (k.decode(errors="replace"),
                                        v.decode(errors="replace"), rev))
    elif cmd in ("status", "map", "members") and r.status == "OK":
        for sh in r.shards:
            print("shard %(shard)d: %(role)s, leader %(leader)d, term "
                  "%(term)d, commit %(commit)d, applied %(applied)d" % sh)
        for nid, addr in r.nodes:
            print("node %d at %s" % (nid, addr))
    else:
        extra = " (revision %d)" % r.revision if r.revision else ""
        print(r.status + extra + (": " + r.message if r.message else ""))
    return 0 if r.status == "OK" else 1


if __name__ == "__main__":
    import sys
    sys.exit(_main(sys.argv))


# ------------------------------------------------------------ test frame

def check(cond, what):
    """A test assertion that survives `python3 -O`."""
    if not cond:
        raise AssertionError(what)


def ringkvd_path():
    """The ringkvd binary a test runs: its first argument, else $RINGKVD."""
    return sys.argv[1] if len(sys.argv) > 1 else os.environ["RINGKVD"]


@contextlib.contextmanager
def test_cluster(tag, n_nodes, shards, log_lines=40, **kw):
    """A Cluster of `n_nodes` (not started) in a fresh temporary dir; on
    the way out every node is stopped and the dir removed, and when the
    body failed the tail of each node's log is printed first."""
    work = tempfile.mkdtemp(prefix="rk-e2e-%s-" % tag)
    cl = Cluster(ringkvd_path(), work, n_nodes=n_nodes, shards=shards, **kw)
    ok = False
    try:
        yield cl
        ok = True
    finally:
        cl.stop_all()
        if not ok:
            for i in range(1, cl.n + 1):
                try:
                    print("---- node %d log (tail)" % i)
                    print("\n".join(cl.log(i).splitlines()[-log_lines:]))
                except OSError:
                    pass
        shutil.rmtree(work, ignore_errors=True)
