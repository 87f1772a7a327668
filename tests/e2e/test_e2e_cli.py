#!/usr/bin/env python3
"""End-to-end test of the `ringkv` command-line tool on a real 3-node
cluster: every command, its JSON output, binary values through stdin, the
documented exit codes, and a short `ringkv bench -o json`.

Usage: test_e2e_cli.py PATH/TO/ringkvd BUILD_DIR
"""
# ctest-timeout: 180

import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkclient as rk  # noqa: E402

SHARDS = 4

check = rk.check


class Cli:
    def __init__(self, binary, endpoints):
        self.binary = binary
        self.env = dict(os.environ, RINGKV_ENDPOINTS=endpoints)

    def run(self, *args, stdin=None, rc=0, timeout=60):
        p = subprocess.run([self.binary] + list(args), input=stdin,
                           capture_output=True, timeout=timeout,
                           env=self.env)
        check(p.returncode == rc,
              "ringkv %s: exit %d, wanted %d\nstdout: %r\nstderr: %r" %
              (" ".join(args), p.returncode, rc, p.stdout, p.stderr))
        return p.stdout, p.stderr.decode(errors="replace")

    def json(self, *args, rc=0, **kw):
        out, _ = self.run("-o", "json", *args, rc=rc, **kw)
        return json.loads(out.decode())


def main():
    build = sys.argv[2]
    ringkv = os.path.join(build, "src", "cli", "ringkv")
    with rk.test_cluster("cli", 3, SHARDS) as cl:
        eps = ",".join("127.0.0.1:%d" % cl.client_port(i) for i in (1, 2, 3))
        cli = Cli(ringkv, eps)
        cl.start_all()
        cl.wait_leaders(SHARDS + 1)

        # help and usage
        out, _ = cli.run("help")
        for cmd in ("get", "put", "del", "cas", "scan", "status", "shards",
                    "members", "leader", "shard", "bench"):
            check(cmd in out.decode(), "help lacks %s" % cmd)
            o, _ = cli.run("help", cmd)
            check(o.decode().startswith("usage: ringkv " + cmd), o)
        cli.run(rc=2)
        _, err = cli.run("frobnicate", rc=2)
        check("unknown command" in err, err)
        cli.run("get", rc=2)
        cli.run("cas", "k", "v", rc=2)  # no expectation
        cli.run("--timeout", "soon", "get", "k", rc=2)
        cli.run("-o", "yaml", "get", "k", rc=2)
        j = cli.json("version")
        check(j["version"], j)

        # put / get / del
        out, _ = cli.run("put", "user:1", "alice")
        check(out.decode().startswith("OK revision "), out)
        out, _ = cli.run("get", "user:1")
        check(out == b"alice", out)
        j = cli.json("get", "user:1")
        check(j["found"] and j["value"] == "alice" and j["revision"] > 0, j)
        rev = j["revision"]
        j = cli.json("put", "user:2", "bob")
        check(j["op"] == "put" and j["revision"] > 0, j)
        _, err = cli.run("get", "user:404", rc=1)
        check("not found" in err, err)
        j = cli.json("get", "user:404", rc=1)
        check(j["found"] is False, j)

        # binary values through stdin
        blob = bytes(range(256)) * 40
        cli.run("put", "blob", "-", stdin=blob)
        out, _ = cli.run("get", "blob")
        check(out == blob, "binary value changed: %d bytes" % len(out))
        j = cli.json("get", "blob")
        check("value_base64" in j, j)

        # cas: by value, by revision, absent, mismatch, delete
        j = cli.json("cas", "user:1", "--expect-value", "alice", "alice2")
        check(j["revision"] > rev, j)
        _, err = cli.run("cas", "user:1", "--expect-value", "alice", "x",
                         rc=1)
        check("compare failed" in err and "alice2" in err, err)
        j = cli.json("cas", "user:1", "--expect-value", "nope", "x", rc=1)
        check(j["succeeded"] is False and j["value"] == "alice2", j)
        r2 = cli.json("get", "user:1")["revision"]
        cli.run("cas", "user:1", "--expect-revision", str(r2), "alice3")
        cli.run("cas", "lock", "--expect-absent", "me")
        cli.run("cas", "lock", "--expect-absent", "you", rc=1)
        cli.run("cas", "lock", "--expect-value", "me", "--delete")
        cli.run("get", "lock", rc=1)

        # del
        j = cli.json("del", "user:2")
        check(j["op"] == "del", j)
        cli.run("del", "user:2", rc=1)

        # scan across shards, in key order
        for i in range(30):
            cli.run("put", "scan:%02d" % i, "v%d" % i)
        out, _ = cli.run("scan", "--prefix", "scan:", "--limit", "100")
        lines = out.decode().splitlines()
        check(len(lines) == 30, lines)
        check(lines == sorted(lines) and lines[0] == "scan:00\tv0", lines[:3])
        j = cli.json("scan", "--prefix", "scan:", "--limit", "7",
                     "--keys-only")
        check(j["count"] == 7 and [x["key"] for x in j["items"]] ==
              ["scan:%02d" % i for i in range(7)], j)
        j = cli.json("scan", "--prefix", "scan:", "--start-after", "scan:27")
        check([x["key"] for x in j["items"]] == ["scan:28", "scan:29"], j)

        # long keys (over LMDB's 511-byte key limit, up to the default
        # --max-key-bytes of 4 KiB): put/get, and a prefix scan across the
        # shards in byte order, each key once, also page by page. Keys
        # around the 480-byte threshold share prefixes so that the store's
        # long-key slots (first 480 bytes + hash) must be sorted back.
        base = "long:" + "abcdefghij" * 420
        longs = set()
        for n in (6, 470, 479, 480, 481, 488, 496, 497, 512, 1000, 4095):
            longs.add(base[:n])
        for i in range(12):
            longs.add(base[:480] + "%02d" % (37 * i % 100) + "x" * (i * 301))
            longs.add(base[:700] + chr(ord("a") + i))
        longs.add(base[:4090] + "zzzzzz")
        longs = sorted(k for k in longs if len(k) <= 4096)
        check(max(len(k) for k in longs) == 4096, "no 4 KiB key")
        for k in longs:
            cli.run("put", k, "v%d" % len(k))
        k4 = base[:4090] + "zzzzzz"
        out, _ = cli.run("get", k4)
        check(out == b"v4096", "4 KiB key get: %r" % out[:40])
        j = cli.json("scan", "--prefix", "long:", "--limit", "1000")
        got = [x["key"] for x in j["items"]]
        check(got == longs, "long-key scan: %d keys, wanted %d; first "
              "difference at %s" % (len(got), len(longs), next(
                  (i for i, (a, b) in enumerate(zip(got, longs)) if a != b),
                  min(len(got), len(longs)))))
        paged = []
        after = None
        for _ in range(len(longs) + 2):
            args = ["scan", "--prefix", "long:", "--limit", "5",
                    "--keys-only"]
            if after is not None:
                args += ["--start-after", after]
            items = cli.json(*args)["items"]
            if not items:
                break
            paged += [x["key"] for x in items]
            after = items[-1]["key"]
        check(paged == longs, "paged long-key scan: %d keys" % len(paged))
        j = cli.json("scan", "--prefix", base[:485], "--limit", "1000")
        check([x["key"] for x in j["items"]] ==
              [k for k in longs if k.startswith(base[:485])],
              "scan with a 485-byte prefix")
        # One byte over the limit: refused (exit 4, TOO_LARGE), not stored.
        _, err = cli.run("put", base[:4096] + "+", "v", rc=4)
        check("TOO_LARGE" in err or "over the limit" in err, err)
        cli.run("get", base[:4096] + "+", rc=4)
        cli.run("del", k4)
        cli.run("get", k4, rc=1)

        # cluster commands
        out, _ = cli.run("status")
        check(out.decode().count("leader") >= SHARDS + 1, out)
        j = cli.json("status")
        check(j["reachable"] == 3 and len(j["nodes"]) == 3, j)
        leaders = {}
        for n in j["nodes"]:
            for s in n["shards"]:
                if s["role"] == "leader":
                    leaders[s["shard"]] = n["id"]
        check(len(leaders) == SHARDS + 1, leaders)
        j = cli.json("shards")
        check(len(j["shards"]) == SHARDS + 1 and j["epoch"] >= 1, j)
        share = sum(s["ring_share"] for s in j["shards"])
        check(abs(share - 1.0) < 1e-6, "ring shares sum to %f" % share)
        out, _ = cli.run("shards")
        check(b"epoch" in out, out)
        j = cli.json("members", "list")
        check(sorted(m["id"] for m in j["members"]) == [1, 2, 3], j)
        out, _ = cli.run("members")
        check(b"active" in out, out)
        shard = 1
        target = next(i for i in (1, 2, 3) if i != leaders[shard])
        j = cli.json("leader", "transfer", str(shard), "--to", str(target))
        check(j["ok"], j)
        cli.run("leader", "transfer", "x", rc=2)
        # To a node that hosts no replica of the shard: refused, and said so
        # (it was "key not found", exit 1).
        _, err = cli.run("leader", "transfer", str(shard), "--to", "7", rc=4)
        check("node 7 is not a replica of shard %d" % shard in err, err)
        # Membership changes and splits: either done, or refused with a
        # clear message and exit code 4 (by a server without them).
        out, err = cli.run("shard", "split", "0", rc=2)
        p = subprocess.run([ringkv, "--endpoints", eps, "members", "remove",
                            "99"], capture_output=True, timeout=60)
        check(p.returncode in (0, 4), p)
        if p.returncode == 4:
            check(b"ringkv: members remove:" in p.stderr, p.stderr)

        # members add: node id 0 is never valid; the cluster refuses it.
        _, err = cli.run("members", "add", "0", "127.0.0.1:1", "127.0.0.1:2",
                         rc=4)
        check("ringkv: members add:" in err, err)
        cli.run("members", "add", "x", rc=2)

        # unreachable cluster: exit 3 within the timeout
        p = subprocess.run([ringkv, "--endpoints", "127.0.0.1:1",
                            "--timeout", "500ms", "get", "k"],
                           capture_output=True, timeout=30)
        check(p.returncode == 3, p)
        check(b"deadline" in p.stderr, p.stderr)
        _, err = cli.run("--endpoints", "nohost", "get", "k", rc=2)
        check("bad endpoints" in err, err)

        # bench, JSON
        for op in ("put", "get", "mix"):
            j = cli.json("bench", "--clients", "8", "--duration", "1s",
                         "--warmup", "0", "--op", op, "--keys", "200",
                         "--value-size", "64")
            for k in ("ops_per_sec", "p50_ms", "p99_ms", "errors", "ops"):
                check(k in j, "bench json lacks %s: %s" % (k, j))
            check(j["ops"] > 0 and j["errors"] == 0, j)
            check(j["p50_ms"] <= j["p99_ms"] <= j["max_ms"], j)
        out, err = cli.run("bench", "--clients", "4", "--duration", "2s",
                           "--warmup", "0", "--keys", "100")
        check("ops/s" in out.decode() and "p99.9" in out.decode(), out)
        check("ops/s" in err, "no progress line: %r" % err)
        cli.run("bench", "--op", "nope", rc=2)
        print("every command: ok")
    print("e2e_cli: ok")


if __name__ == "__main__":
    main()
