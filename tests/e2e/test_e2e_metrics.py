#!/usr/bin/env python3
"""End-to-end: the metrics endpoint of a 3-node cluster.

/metrics is well-formed Prometheus text (every line parsed: HELP and TYPE
before each family's samples, label sets, numbers; histogram buckets in
increasing `le` order, cumulative counts monotone, the +Inf bucket equal to
_count, a _sum beside it) and carries the series of issue 4: requests by
op and status, latency histograms, per-shard term/commit/applied/leader,
storage sync latency, bytes and messages in and out, quiesced groups.
Counters never go down between two scrapes, the nodes agree on each
shard's leader, idle groups quiesce, /health answers and an unknown path
gets 404.

Usage: test_e2e_metrics.py PATH/TO/ringkvd BUILD_DIR
"""
# ctest-timeout: 120

import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkclient as rk  # noqa: E402

SHARDS = 2
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(,|$)')

check = rk.check


def parse_labels(text, line):
    labels = {}
    i = 0
    while i < len(text):
        m = LABEL.match(text, i)
        check(m is not None, "bad label set in %r" % line)
        check(m.group(1) not in labels, "label repeated in %r" % line)
        labels[m.group(1)] = m.group(2)
        i = m.end()
    return labels


def parse(text):
    """{family: {"type", "help", "samples": [(name, labels, value)]}}.
    Raises AssertionError on any line that is not Prometheus text."""
    check(text.endswith("\n"), "exposition does not end in a newline")
    fams = {}
    fam = None
    for line in text.splitlines():
        check(line != "", "empty line")
        if line.startswith("# HELP "):
            parts = line.split(" ", 3)
            check(len(parts) == 4 and parts[3], "HELP without text: %r" % line)
            check(parts[2] not in fams, "family %s twice" % parts[2])
            fam = parts[2]
            fams[fam] = {"help": parts[3], "type": None, "samples": []}
            continue
        if line.startswith("# TYPE "):
            parts = line.split(" ")
            check(len(parts) == 4 and parts[2] == fam
                  and fams[fam]["type"] is None,
                  "TYPE not right after its HELP: %r" % line)
            check(parts[3] in ("counter", "gauge", "histogram", "summary",
                               "untyped"), "unknown type: %r" % line)
            fams[fam]["type"] = parts[3]
            continue
        check(not line.startswith("#"), "stray comment %r" % line)
        m = SAMPLE.match(line)
        check(m is not None, "bad sample line %r" % line)
        check(fam is not None and fams[fam]["type"] is not None,
              "sample before HELP/TYPE: %r" % line)
        name = m.group(1)
        suffixes = ("_bucket", "_sum", "_count") \
            if fams[fam]["type"] == "histogram" else ("",)
        check(any(name == fam + s for s in suffixes),
              "sample %s outside its family %s" % (name, fam))
        labels = parse_labels(m.group(2) or "", line)
        value = float(m.group(3))
        check(value == value, "NaN in %r" % line)
        if fams[fam]["type"] == "counter" or name.endswith(
                ("_bucket", "_count")):
            check(value >= 0, "negative counter %r" % line)
        fams[fam]["samples"].append((name, labels, value))
    for f, d in fams.items():
        check(d["type"] is not None, "family %s has no TYPE" % f)
        if d["type"] == "histogram":
            check_histogram(f, d["samples"])
    return fams


def check_histogram(fam, samples):
    series = {}
    for name, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        s = series.setdefault(rest, {"buckets": [], "sum": None,
                                     "count": None})
        if name == fam + "_bucket":
            check("le" in labels, "%s bucket without le" % fam)
            le = float("inf") if labels["le"] == "+Inf" else \
                float(labels["le"])
            s["buckets"].append((le, value))
        elif name == fam + "_sum":
            s["sum"] = value
        else:
            s["count"] = value
    check(series, "histogram %s has no series" % fam)
    for rest, s in series.items():
        b = s["buckets"]
        check(b and s["sum"] is not None and s["count"] is not None,
              "%s%s lacks buckets, _sum or _count" % (fam, rest))
        les = [le for le, _ in b]
        check(les == sorted(les) and len(set(les)) == len(les),
              "%s%s buckets not in increasing le order" % (fam, rest))
        check(les[-1] == float("inf"), "%s%s has no +Inf bucket" % (fam, rest))
        counts = [c for _, c in b]
        check(all(x <= y for x, y in zip(counts, counts[1:])),
              "%s%s buckets not cumulative: %s" % (fam, rest, counts))
        check(counts[-1] == s["count"],
              "%s%s +Inf %s != count %s" % (fam, rest, counts[-1],
                                            s["count"]))
        check(s["sum"] >= 0, "%s%s negative sum" % (fam, rest))


def values(fams, fam, name=None):
    """[(labels, value)] of one family's samples named `name`."""
    check(fam in fams, "series %s missing" % fam)
    return [(l, v) for n, l, v in fams[fam]["samples"]
            if n == (name or fam)]


def one(fams, fam):
    vs = values(fams, fam)
    check(len(vs) == 1 and vs[0][0] == {}, "%s: not one plain sample" % fam)
    return vs[0][1]


def scrape(cl, i):
    head, body = cl.http(i, "/metrics")
    check(head.startswith("HTTP/1.1 200"), "node %d /metrics: %s" % (i, head))
    check("text/plain; version=0.0.4" in head,
          "node %d /metrics content type: %s" % (i, head))
    return parse(body)


def counters(fams):
    out = {}
    for f, d in fams.items():
        if d["type"] in ("counter", "histogram"):
            for n, l, v in d["samples"]:
                if d["type"] == "counter" or not n.endswith("_sum"):
                    out[(n, tuple(sorted(l.items())))] = v
    return out


def main():
    with rk.test_cluster("metrics", 3, SHARDS) as cl:
        cl.start_all()
        leaders = cl.wait_leaders(SHARDS + 1)
        keys = [b"m-%d" % k for k in range(20)]
        for seq, k in enumerate(keys, 1):
            r = rk.call_leader(cl, rk.op_put(k, b"v"), client_id=77, seq=seq)
            check(r.status == "OK", "put %r: %r" % (k, r))
        for k in keys[:5]:
            r = rk.call_leader(cl, rk.op_get(k))
            check(r.status == "OK", "get %r: %r" % (k, r))
        r = rk.call_leader(cl, rk.op_get(b"m-absent"))
        check(r.status == "NOT_FOUND", "get of an absent key: %r" % r)

        first = {i: scrape(cl, i) for i in (1, 2, 3)}
        total = {}
        for i, f in first.items():
            for fam in ("ringkv_requests_total",
                        "ringkv_request_duration_seconds",
                        "ringkv_shard_term", "ringkv_shard_commit_index",
                        "ringkv_shard_applied_index", "ringkv_shard_leader",
                        "ringkv_storage_sync_duration_seconds",
                        "ringkv_peer_bytes_sent_total",
                        "ringkv_peer_bytes_received_total",
                        "ringkv_peer_messages_sent_total",
                        "ringkv_peer_messages_received_total",
                        "ringkv_client_bytes_sent_total",
                        "ringkv_client_bytes_received_total",
                        "ringkv_shards_quiesced"):
                check(fam in f, "node %d: series %s missing" % (i, fam))
            for l, v in values(f, "ringkv_requests_total"):
                check(set(l) == {"op", "status"}, "request labels %s" % l)
                key = (l["op"], l["status"])
                total[key] = total.get(key, 0) + v
            # Per-shard series cover every hosted shard, and agree.
            for fam in ("ringkv_shard_term", "ringkv_shard_commit_index",
                        "ringkv_shard_applied_index", "ringkv_shard_leader"):
                shards = sorted(int(l["shard"]) for l, _ in values(f, fam))
                check(shards == list(range(SHARDS + 1)),
                      "node %d %s shards %s" % (i, fam, shards))
            commit = {l["shard"]: v for l, v in
                      values(f, "ringkv_shard_commit_index")}
            for l, v in values(f, "ringkv_shard_applied_index"):
                check(v <= commit[l["shard"]],
                      "node %d shard %s applied beyond commit" %
                      (i, l["shard"]))
            for l, v in values(f, "ringkv_shard_leader"):
                check(leaders[int(l["shard"])] == v,
                      "node %d: shard %s leader %s, status says %s" %
                      (i, l["shard"], v, leaders[int(l["shard"])]))
            check(one(f, "ringkv_peer_bytes_sent_total") > 0 and
                  one(f, "ringkv_peer_messages_received_total") > 0,
                  "node %d: no peer traffic counted" % i)
            check(values(f, "ringkv_storage_sync_duration_seconds",
                         "ringkv_storage_sync_duration_seconds_count")[0][1]
                  > 0, "node %d: no storage sync counted" % i)
        check(total.get(("put", "OK"), 0) >= len(keys),
              "puts counted: %s" % total)
        check(total.get(("get", "OK"), 0) >= 5, "gets counted: %s" % total)
        check(total.get(("get", "NOT_FOUND"), 0) >= 1,
              "NOT_FOUND counted: %s" % total)
        ops = set()
        for f in first.values():
            for l, v in values(f, "ringkv_request_duration_seconds",
                               "ringkv_request_duration_seconds_count"):
                if v > 0:
                    ops.add(l["op"])
        check({"put", "get"} <= ops, "latency histograms for %s" % ops)

        # Idle groups quiesce, and no counter goes down in between.
        deadline = time.time() + 30
        while True:
            later = {i: scrape(cl, i) for i in (1, 2, 3)}
            q = [one(later[i], "ringkv_shards_quiesced") for i in (1, 2, 3)]
            if all(x == SHARDS + 1 for x in q):
                break
            check(time.time() < deadline, "groups never quiesced: %s" % q)
            time.sleep(0.5)
        for i in (1, 2, 3):
            a, b = counters(first[i]), counters(later[i])
            for k, v in a.items():
                check(k in b and b[k] >= v,
                      "node %d: counter %s went from %s to %s" %
                      (i, k, v, b.get(k)))

        head, body = cl.http(1, "/health")
        check(head.startswith("HTTP/1.1 200") and body == "ok\n",
              "/health: %s %r" % (head, body))
        head, _ = cl.http(1, "/no/such/path")
        check(head.startswith("HTTP/1.1 404"), "unknown path: %s" % head)
        head, body = cl.http(1, "/metrics")
        check(head.startswith("HTTP/1.1 200"), "node still serves metrics")
        rcs = cl.stop_all()
        check(all(rc == 0 for rc in rcs.values()), "clean stop: %s" % rcs)
        print("%d families on node 1, quiesced %s" % (len(later[1]), q))
    print("e2e_metrics: ok")


if __name__ == "__main__":
    main()
