#!/usr/bin/env python3
"""End-to-end: bad input (garbage bytes, oversized frames, malformed
protobuf, requests without an operation, limits, unknown shards, truncated
frames) gets an error status or a closed connection while another client on
the same node keeps being served; /metrics is well-formed Prometheus text
and /health answers.

Usage: test_e2e_badinput.py PATH/TO/ringkvd
"""

import os
import re
import socket
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkclient as rk  # noqa: E402

SHARDS = 2


check = rk.check


def closed_by_node(sock):
    """True if the node closes the connection (EOF) within the timeout,
    after any responses it sent first."""
    sock.settimeout(10)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def raw_conn(cl, node):
    s = socket.create_connection(("127.0.0.1", cl.client_port(node)),
                                 timeout=10)
    return s


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def check_prometheus(text):
    """Every family has HELP then TYPE before its samples; every sample is
    `name{labels} number` with the family's name as prefix."""
    family = None
    samples = 0
    names = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            family = line.split()[2]
            continue
        if line.startswith("# TYPE "):
            parts = line.split()
            check(parts[2] == family, "TYPE without HELP: %s" % line)
            check(parts[3] in ("counter", "gauge", "histogram"),
                  "type %s" % parts[3])
            continue
        check(not line.startswith("#"), "stray comment %s" % line)
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$', line)
        check(m is not None, "bad sample line %r" % line)
        check(m.group(1).startswith(family), "sample outside its family")
        float(m.group(3))
        names.add(m.group(1))
        samples += 1
    check(samples > 20, "too few samples")
    return names


def main():
    with rk.test_cluster("bad", 3, SHARDS) as cl:
        cl.start_all()
        leaders = cl.wait_leaders(SHARDS + 1)
        node = leaders[1]
        good = rk.Conn(cl.client_port(node))
        seq = [0]

        def still_served():
            seq[0] += 1
            r = rk.call_leader(cl, rk.op_put("alive", str(seq[0])),
                               client_id=5, seq=seq[0])
            check(r.status == "OK", "put after bad input: %r" % r)
            g = good.call(rk.op_get("alive"), consistency=2)
            check(g.status in ("OK", "NOT_FOUND"),
                  "good connection after bad input: %r" % g)

        still_served()

        # 1. Garbage (an HTTP request) reads as a ~1 GiB frame: closed.
        s = raw_conn(cl, node)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        check(closed_by_node(s), "garbage not closed")
        s.close()
        still_served()

        # 2. A frame header over --max-frame-bytes (default 4 MiB): closed
        # before anything is allocated for it.
        s = raw_conn(cl, node)
        s.sendall(struct.pack(">I", 5 << 20) + b"x" * 100)
        check(closed_by_node(s), "oversized frame not closed")
        s.close()
        still_served()

        # 3. Malformed protobuf in a valid frame: INVALID_ARGUMENT, then
        # the node hangs up.
        c = rk.Conn(cl.client_port(node))
        c.send_raw(frame(b"\xff\xff\xff\xff"))
        r = c.recv()
        check(r.status == "INVALID_ARGUMENT", "malformed: %r" % r)
        check(closed_by_node(c.sock), "malformed protobuf not closed")
        c.close()
        still_served()

        # 4. A Request without an operation: INVALID_ARGUMENT, and the
        # connection stays usable.
        c = rk.Conn(cl.client_port(node))
        c.send_raw(frame(rk.f_u64(1, 77)))
        r = c.recv()
        check(r.status == "INVALID_ARGUMENT" and r.request_id == 77,
              "no op: %r" % r)
        r = c.call(rk.op_get("alive"), consistency=2)
        check(r.status == "OK", "connection unusable after no-op: %r" % r)

        # 5. Limits.
        r = c.call(rk.op_put("", "v"), client_id=5, seq=1000)
        check(r.status == "INVALID_ARGUMENT", "empty key: %r" % r)
        r = c.call(rk.op_get(""))
        check(r.status == "INVALID_ARGUMENT", "empty key get: %r" % r)
        r = c.call(rk.op_put("k" * 5000, "v"), client_id=5, seq=1001)
        check(r.status == "TOO_LARGE", "long key: %r" % r)
        r = c.call(rk.op_put("big", b"v" * ((1 << 20) + 1)), client_id=5,
                   seq=1002)
        check(r.status == "TOO_LARGE", "big value: %r" % r)
        r = c.call(rk.op_scan(99, ""))
        check(r.status == "WRONG_SHARD", "unknown shard: %r" % r)
        r = c.call(rk.op_scan(0, ""))
        check(r.status == "INVALID_ARGUMENT", "scan without shard: %r" % r)
        r = rk.call_leader(cl, rk.op_cas("nokey", "v", expect_value=""),
                           client_id=6, seq=1)
        check(r.status == "CAS_MISMATCH" and not r.found,
              "cas on a missing key is a mismatch: %r" % r)
        r = c.call(rk.op_cas("k", "v", expect_revision=0), client_id=5,
                   seq=1005)
        check(r.status == "INVALID_ARGUMENT", "cas revision 0: %r" % r)
        r = c.call((21, b""))
        check(r.status == "INVALID_ARGUMENT", "split unsupported: %r" % r)
        c.close()
        # A value just under the limit is accepted.
        r = rk.call_leader(cl, rk.op_put("big", b"v" * (1 << 20)),
                           client_id=9, seq=1)
        check(r.status == "OK", "1 MiB value: %r" % r)
        r = rk.call_leader(cl, rk.op_get("big"))
        check(r.status == "OK" and len(r.value) == 1 << 20, "1 MiB get")
        still_served()

        # 6. A truncated frame and a hang-up mid-frame.
        s = raw_conn(cl, node)
        s.sendall(struct.pack(">I", 100) + b"\x08\x01")
        s.close()
        # 7. Many connections opened and dropped at once.
        socks = [raw_conn(cl, node) for _ in range(50)]
        for s in socks:
            s.close()
        still_served()

        # 8. Peer port: garbage and a foreign hello are refused.
        s = socket.create_connection(("127.0.0.1", cl.base + 100 + node),
                                     timeout=10)
        s.sendall(frame(b"RKP1\x01\x00\x00\x00" + b"\x00" * 24))
        check(closed_by_node(s), "bad peer hello not closed")
        s.close()
        still_served()

        for i in range(1, 4):
            check(cl.alive(i), "node %d died" % i)
        log = cl.log(node)
        check("frame over --max-frame-bytes" in log, "no logged reason")
        check("malformed request" in log, "no logged malformed reason")

        # /metrics and /health
        head, body = cl.http(node, "/metrics")
        check(head.startswith("HTTP/1.1 200"), "metrics status: %s" % head)
        names = check_prometheus(body)
        for want in ("ringkv_requests_total",
                     "ringkv_request_duration_seconds_bucket",
                     "ringkv_shard_term", "ringkv_shard_commit_index",
                     "ringkv_shard_applied_index", "ringkv_shard_leader",
                     "ringkv_storage_sync_duration_seconds_count",
                     "ringkv_peer_bytes_sent_total",
                     "ringkv_shards_quiesced"):
            check(want in names, "metric %s missing" % want)
        check('status="INVALID_ARGUMENT"' in body, "bad requests counted")
        head, body = cl.http(node, "/health")
        check(head.startswith("HTTP/1.1 200") and body == "ok\n",
              "health: %s %r" % (head, body))
        head, _ = cl.http(node, "/nope")
        check(head.startswith("HTTP/1.1 404"), "404: %s" % head)

        good.close()
        rcs = cl.stop_all()
        check(all(rc == 0 for rc in rcs.values()), "clean stop: %s" % rcs)
        print("e2e bad input: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
