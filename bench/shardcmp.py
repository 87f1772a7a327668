#!/usr/bin/env python3
"""Where a put's CPU goes: one `ringkv bench --op put` run on a fresh local
3-node cluster, with the CPU of every ringkvd thread per put.

Usage: bench/shardcmp.py [--build DIR] [--shards S] [--clients C] [--secs N]
                         [--port-base P] [--rate R]

Starts `scripts/cluster --detach --no-build --fresh` (Release binaries in
--build, default build/release) in /tmp/shardcmp-P, runs the bench
(256-byte values, 16-byte keys, 100,000 keys, 2 s warmup, like bench/run),
stops the cluster and prints:
  - ops/s and p50/p99/p99.9;
  - per thread of each node (the main thread runs the libuv loop, the second
    one is the storage thread): run % and run-queue wait % of the wall time
    (/proc/PID/task/TID/schedstat), context switches/s, and user/sys
    microseconds of CPU per put (/proc/PID/task/TID/stat);
  - per put, summed over the 3 nodes: Raft messages, peer frames, storage
    batches and entries, WAL bytes and checkpoint time (from /metrics), read
    and write syscalls and the bytes written (/proc/PID/io wchar, write_bytes);
  - node CPU microseconds per put, and the load generator's.
Per put figures divide by ops/s x (warmup + duration): an estimate. CPU per
put moves far less than ops/s when other work shares the machine, so A/B
comparisons alternate runs (A B A B ...) and compare medians.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WARMUP = 2
PER_PUT = ("batches_total", "batch_entries", "peer_messages", "peer_frames", "wal_bytes",
           "checkpoint_microseconds", "checkpoint_sync", "checkpoints_deferred")


def scrape(ports):
    """Sum of each unlabelled counter (and the peer message kinds) over the nodes."""
    tot = {}
    for port in ports:
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5) as f:
            text = f.read().decode("utf-8", "replace")
        for line in text.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            k, v = line.rsplit(" ", 1)
            if "{" in k and "by_kind" not in k:
                continue
            tot[k] = tot.get(k, 0.0) + float(v)
    return tot


def threads(pids):
    """(pid, tid, name) -> (utime ticks, stime ticks, run ns, wait ns, slices)."""
    out = {}
    for p in pids:
        for t in os.listdir("/proc/%d/task" % p):
            try:
                with open("/proc/%d/task/%s/stat" % (p, t)) as f:
                    st = f.read()
                with open("/proc/%d/task/%s/schedstat" % (p, t)) as f:
                    ss = f.read().split()
            except OSError:
                continue
            f = st.rsplit(")", 1)[1].split()
            out[(p, int(t))] = (int(f[11]), int(f[12]), int(ss[0]), int(ss[1]), int(ss[2]))
    return out


def syscalls(pids):
    """Read and write syscalls, bytes written by them and bytes sent to disk."""
    r = w = wc = wb = 0
    for p in pids:
        with open("/proc/%d/io" % p) as f:
            d = dict(line.split(": ") for line in f.read().splitlines())
        r += int(d["syscr"])
        w += int(d["syscw"])
        wc += int(d["wchar"])
        wb += int(d["write_bytes"])
    return r, w, wc, wb


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(TOP, "build", "release"))
    ap.add_argument("--shards", type=int, default=64)
    ap.add_argument("--clients", type=int, default=256)
    ap.add_argument("--secs", type=int, default=10)
    ap.add_argument("--port-base", type=int, default=23000)
    ap.add_argument("--rate", type=int, default=0, help="ops/s cap (0: none)")
    a = ap.parse_args()
    data = "/tmp/shardcmp-%d" % a.port_base
    cluster = os.path.join(TOP, "scripts", "cluster")
    shutil.rmtree(data, ignore_errors=True)
    subprocess.run([cluster, "--detach", "--no-build", "--build-dir", os.path.abspath(a.build),
                    "--fresh", "--nodes", "3",
                    "--shards", str(a.shards), "--data-dir", data,
                    "--port-base", str(a.port_base)], check=True, stdout=subprocess.DEVNULL,
                   timeout=120)
    try:
        pids = []
        for i in (1, 2, 3):
            with open(os.path.join(data, "run", "node%d.pid" % i)) as f:
                pids.append(int(f.read()))
        ports = [a.port_base + 200 + i for i in (1, 2, 3)]
        cmd = [os.path.join(a.build, "src", "cli", "ringkv"), "--endpoints",
               ",".join("127.0.0.1:%d" % (a.port_base + i) for i in (1, 2, 3)),
               "--timeout", "10s", "-o", "json", "bench", "--clients", str(a.clients),
               "--duration", "%ds" % a.secs, "--warmup", "%ds" % WARMUP, "--op", "put",
               "--value-size", "256", "--key-size", "16", "--keys", "100000", "--no-prefill"]
        if a.rate:
            cmd += ["--rate", str(a.rate)]
        time.sleep(1)
        m0, t0, y0, c0, w0 = scrape(ports), threads(pids), syscalls(pids), os.times(), time.time()
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=a.secs + 120).stdout
        m1, t1, y1, c1, w1 = scrape(ports), threads(pids), syscalls(pids), os.times(), time.time()
    finally:
        subprocess.run([cluster, "stop", "--data-dir", data], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=60)
        shutil.rmtree(data, ignore_errors=True)
    r = json.loads(out)
    hz = os.sysconf("SC_CLK_TCK")
    wall = w1 - w0
    puts = r["ops_per_sec"] * (a.secs + WARMUP)
    if puts <= 0:
        sys.exit("no puts were made: %r" % r)
    print("shards %d clients %d: %.0f ops/s p50 %.3f p99 %.3f p99.9 %.3f errors %d" % (
        a.shards, a.clients, r["ops_per_sec"], r["p50_ms"], r["p99_ms"], r["p999_ms"],
        r["errors"]))
    node_ticks = 0
    for key in sorted(t1):
        b = t0.get(key, (0, 0, 0, 0, 0))
        d = [x - y for x, y in zip(t1[key], b)]
        node_ticks += d[0] + d[1]
        if d[2] < 0.01 * wall * 1e9:
            continue
        kind = "loop" if key[0] == key[1] else "thread %d" % key[1]
        print("  node pid %d %-12s run %3.0f%%  run-queue wait %3.0f%%  switches/s %5.0f  "
              "us/put user %.2f sys %.2f" % (key[0], kind, d[2] / wall / 1e7, d[3] / wall / 1e7,
                                             d[4] / wall, d[0] / hz / puts * 1e6,
                                             d[1] / hz / puts * 1e6))
    d = {k: m1[k] - m0.get(k, 0.0) for k in m1}
    print("  per put: " + ", ".join(
        "%s %.3f" % (k.replace("ringkv_", "").replace("_total", ""), d[k] / puts)
        for k in sorted(d) if d[k] and any(x in k for x in PER_PUT)))
    print("  per put: read syscalls %.3f, write syscalls %.3f" % (
        (y1[0] - y0[0]) / puts, (y1[1] - y0[1]) / puts))
    print("  per put: bytes written %.0f (by write calls), %.0f (to disk)" % (
        (y1[2] - y0[2]) / puts, (y1[3] - y0[3]) / puts))
    bench = (c1.children_user + c1.children_system - c0.children_user - c0.children_system)
    print("  node CPU us/put %.1f, load generator %.1f" % (
        node_ticks / hz / puts * 1e6, bench / puts * 1e6))


if __name__ == "__main__":
    main()
