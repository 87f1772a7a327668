#!/usr/bin/env python3
"""End-to-end: a 3-node cluster whose nodes live on their own loopback
addresses (127.0.0.21-23, as jepsen/ runs them). It elects leaders and
serves writes and reads, and every Raft connection between two nodes
leaves from the sending node's own address (outgoing peer sockets bind to
the --peer-listen IP), so a firewall rule on a node's address cuts all of
its traffic, both ways.

Usage: test_e2e_addrs.py PATH/TO/ringkvd BUILD_DIR
"""
# ctest-timeout: 120

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkclient as rk  # noqa: E402

SHARDS = 2

check = rk.check


def ip(i):
    return "127.0.0.%d" % (20 + i)


def main():
    binary, build = sys.argv[1], sys.argv[2]
    ringkv = os.path.join(build, "src", "cli", "ringkv")
    work = tempfile.mkdtemp(prefix="rk-e2e-addrs-")
    base = rk.free_port_base(3)
    cport, pport, mport = base + 1, base + 101, base + 201
    ic = ",".join("%d=%s:%d" % (j, ip(j), pport) for j in (1, 2, 3))
    icc = ",".join("%d=%s:%d" % (j, ip(j), cport) for j in (1, 2, 3))
    procs = []
    ok = False
    try:
        for i in (1, 2, 3):
            log = open(os.path.join(work, "node%d.log" % i), "ab")
            procs.append(subprocess.Popen(
                [binary, "--id", str(i), "--listen", "%s:%d" % (ip(i), cport),
                 "--peer-listen", "%s:%d" % (ip(i), pport),
                 "--metrics-listen", "%s:%d" % (ip(i), mport),
                 "--data-dir", os.path.join(work, "node%d" % i),
                 "--initial-cluster", ic, "--initial-cluster-clients", icc,
                 "--shards", str(SHARDS), "--election-ms", "600",
                 "--heartbeat-ms", "100", "--tick-ms", "50"],
                stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL))
            log.close()
        eps = ",".join("%s:%d" % (ip(i), cport) for i in (1, 2, 3))
        deadline = time.time() + 60
        while True:
            p = subprocess.run([ringkv, "--endpoints", eps, "--timeout", "2s",
                                "put", "addr-key", "v1"],
                               capture_output=True, timeout=30)
            if p.returncode == 0:
                break
            check(time.time() < deadline, "no write within 60 s: %r" % p)
            time.sleep(0.3)
        p = subprocess.run([ringkv, "--endpoints", eps, "get", "addr-key"],
                           capture_output=True, timeout=30)
        check(p.returncode == 0 and p.stdout == b"v1", p)

        # Every established connection to a peer port comes from a node
        # address other than the destination's, never from 127.0.0.1.
        out = subprocess.run(["ss", "-tnH", "state", "established"],
                             capture_output=True, text=True,
                             timeout=30).stdout
        peers = []
        for line in out.splitlines():
            f = line.split()
            if len(f) < 4:
                continue
            local, remote = f[-2], f[-1]
            if remote.endswith(":%d" % pport):
                peers.append((local.rsplit(":", 1)[0],
                              remote.rsplit(":", 1)[0]))
        check(len(peers) >= 3, "too few peer connections: %s" % peers)
        nodes = {ip(i) for i in (1, 2, 3)}
        for src, dst in peers:
            check(src in nodes and dst in nodes and src != dst,
                  "peer connection %s -> %s does not leave from the node's "
                  "address" % (src, dst))
        print("%d peer connections, each from its node's own address" %
              len(peers))
        ok = True
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept %s" % work)
    print("e2e_addrs: ok")


if __name__ == "__main__":
    main()
