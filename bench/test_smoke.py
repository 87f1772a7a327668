#!/usr/bin/env python3
"""ctest bench_smoke: `bench/run --smoke --no-build` end to end on the
Release binaries in build/release (scripts/test builds them first), then
checks that every output exists and parses: results.json with a figure from
each stage, latest.md with each section, two PNG plots.

Usage: test_smoke.py (no arguments; paths are relative to this file)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def check_outputs(out):
    with open(os.path.join(out, "results.json")) as f:
        res = json.load(f)
    check(res["mode"] == "smoke", "mode recorded")
    for k in ("fdatasync", "tcp_rtt"):
        check(res["floor"][k]["p50_ms"] > 0 and res["floor"][k]["p99_ms"] >= res["floor"][k]["p50_ms"],
              "floor %s p50/p99: %r" % (k, res["floor"][k]))
    check(len(res["storage"]["rows"]) >= 2, "storage-bench rows parsed")
    check(res["raft"]["entries_per_sec"] > 0, "raft-bench figure parsed")
    check(sorted({r["op"] for r in res["sweep"]}) == ["get", "mix", "put"], "every op ran")
    for r in res["sweep"] + res["shards"]:
        check(r["ops_per_sec"] > 0 and r["p50_ms"] > 0 and r["p999_ms"] >= r["p99_ms"],
              "ringkv bench figures: %r" % r)
        check(len(r["node_cpu_percent"]) == 3, "node CPU of 3 nodes")
    check(len(res["shards"]) >= 2, "shard scaling points")
    for r in res["shards"]:
        check(r.get("command_secs", 0) > 0 and len(r["node_storage"]) == 3 and
              all(n.get("peer_msgs_per_sec", -1) >= 0 for n in r["node_storage"]),
              "shard run has what its CPU and messages per put come from: %r" % r)
    check(len(res["idle"]["cpu_percent"]) == 3, "idle CPU of 3 nodes")
    check(sorted({r["test"] for r in res["redis"]["rows"]}) == ["get", "set"], "redis set and get")
    for r in res["redis"]["rows"]:
        check(r["ops_per_sec"] > 0, "redis figure: %r" % r)
    with open(os.path.join(out, "latest.md")) as f:
        md = f.read()
    for section in ("## Floor", "## Components", "## 3-node cluster", "## Shards",
                    "## Issue 8 targets", "| put | "):
        check(section in md, "latest.md has %r" % section)
    shards_md = md.split("## Shards", 1)[1].split("\n## ", 1)[0]
    check("node CPU us/put" in shards_md, "the shards table shows CPU per put")
    for r in res["shards"]:
        row = [l for l in shards_md.splitlines() if l.startswith("| %d | " % r["shards"])]
        cells = [c.strip() for c in row[0].strip("|").split("|")] if row else []
        check(len(cells) == 10 and float(cells[8]) > 0 and float(cells[9]) >= 0,
              "shards row for %d shards with CPU and messages per put: %r" % (r["shards"], row))
    for png in ("throughput.png", "latency.png"):
        with open(os.path.join(out, png), "rb") as f:
            check(f.read(8) == b"\x89PNG\r\n\x1a\n", "%s is a PNG" % png)


def main():
    tmp = tempfile.mkdtemp(prefix="ringkv-bench-smoke-")
    try:
        out = os.path.join(tmp, "results")
        p = subprocess.Popen([sys.executable, os.path.join(HERE, "run"), "--smoke", "--no-build",
                              "--out", out, "--data-dir", os.path.join(tmp, "data")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            text, _ = p.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            p.terminate()  # bench/run stops its cluster and redis on SIGTERM
            text, _ = p.communicate(timeout=60)
            print(text[-6000:])
            raise AssertionError("bench/run --smoke took over 90 s")
        print(text[-6000:])
        check(p.returncode == 0, "bench/run --smoke exited %d" % p.returncode)
        check("## Issue 8 targets" in text, "the report is printed")
        check_outputs(out)
        check(not os.path.exists(os.path.join(tmp, "data")), "the data dir is cleaned up")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("bench smoke: ok")


if __name__ == "__main__":
    main()
