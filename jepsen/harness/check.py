"""The history: JSON lines from the workload client, the Jepsen EDN form,
and the checkers (ringkv-lincheck per key for registers; set and counter
checks here)."""

import bisect
import json
import os
import subprocess


def load(path):
    events = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            try:
                events.append(json.loads(line))
            except ValueError:
                raise ValueError("%s:%d: not JSON: %.80s" % (path, n, line))
    return events


def pair(events):
    """Ops as {invoke, complete (None: never completed), i, j} in invoke
    order; i and j are the events' positions."""
    pending = {}
    ops = []
    for k, e in enumerate(events):
        p = e.get("process")
        if not isinstance(p, int):
            continue
        if e["type"] == "invoke":
            op = {"inv": e, "comp": None, "i": k, "j": None}
            pending[p] = op
            ops.append(op)
        else:
            op = pending.pop(p, None)
            if op is not None:
                op["comp"], op["j"] = e, k
    return ops


def outcome(op):
    return op["comp"]["type"] if op["comp"] else "info"


def counts(ops):
    out = {}
    for op in ops:
        c = out.setdefault(op["inv"]["f"], {"ok": 0, "fail": 0, "info": 0})
        c[outcome(op)] += 1
    return out


# ------------------------------------------------------------- EDN


def edn_value(v):
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + " ".join(edn_value(x) for x in v) + "]"
    return json.dumps(str(v))


def edn_op(e):
    p = e.get("process")
    proc = str(p) if isinstance(p, int) else ":" + str(p)
    val = e.get("value")
    if "key" in e and e.get("f") in ("read", "write", "cas"):
        val = [e["key"], val]
    s = "{:process %s, :type :%s, :f :%s, :value %s, :time %d" % (
        proc, e["type"], e["f"], edn_value(val), e.get("time", 0))
    if e.get("error"):
        s += ", :error %s" % edn_value(e["error"])
    return s + "}"


def write_edn(events, nemesis_events, path):
    allev = [(e.get("time", 0), 0, k, e) for k, e in enumerate(events)]
    allev += [(e["time"], 1, k, e) for k, e in enumerate(nemesis_events)]
    allev.sort(key=lambda x: (x[0], x[1], x[2]))
    with open(path, "w") as f:
        for idx, (_, _, _, e) in enumerate(allev):
            f.write(edn_op(e)[:-1] + ", :index %d}\n" % idx)


# ------------------------------------------------------------- checkers


def check_register(events, lincheck, outdir, time_limit):
    """ringkv-lincheck on each key's sub-history. Returns (valid, per-key
    verdicts, anomalies)."""
    by_key = {}
    for e in events:
        if e.get("f") in ("read", "write", "cas") and "key" in e:
            by_key.setdefault(e["key"], []).append(e)
    kdir = os.path.join(outdir, "keys")
    os.makedirs(kdir, exist_ok=True)
    verdicts, anomalies = {}, []
    for key in sorted(by_key):
        path = os.path.join(kdir, "%s.jsonl" % key)
        with open(path, "w") as f:
            for e in by_key[key]:
                f.write(json.dumps(e) + "\n")
        cmd = [lincheck, "--time-limit", str(time_limit), "--format", "jsonl"]
        r = subprocess.run(cmd + ["--json", path], capture_output=True,
                           timeout=time_limit + 60)
        v = {0: "valid", 1: "invalid", 2: "unknown"}.get(r.returncode,
                                                          "error")
        verdicts[str(key)] = v
        if v in ("invalid", "error"):
            txt = subprocess.run(cmd + [path], capture_output=True,
                                 timeout=time_limit + 60)
            report = os.path.join(outdir, "lincheck-key-%s.txt" % key)
            with open(report, "wb") as f:
                f.write(txt.stdout + txt.stderr)
            detail = {}
            try:
                detail = json.loads(r.stdout.decode())
            except ValueError:
                detail = {"stderr": r.stderr.decode()[:500]}
            anomalies.append({"type": "nonlinearizable" if v == "invalid"
                              else "checker-error", "key": key,
                              "report": os.path.basename(report),
                              "window": detail.get("window"),
                              "stuck_index": detail.get("stuck_index")})
    vals = set(verdicts.values())
    if "invalid" in vals or "error" in vals:
        valid = False
    elif "unknown" in vals:
        valid = "unknown"
    else:
        valid = True
    return valid, verdicts, anomalies


def check_set(ops):
    """Every acknowledged add is in the final read; nothing that surely
    failed or was never added is."""
    ok, fail, info = set(), set(), set()
    final = None
    for op in ops:
        f, o = op["inv"]["f"], outcome(op)
        if f == "add":
            {"ok": ok, "fail": fail, "info": info}[o].add(op["inv"]["value"])
        elif f == "read" and o == "ok":
            final = set(op["comp"]["value"])
    anomalies = []
    if final is None:
        return "unknown", [{"type": "no-final-read"}]
    lost = sorted(ok - final)
    if lost:
        anomalies.append({"type": "lost", "count": len(lost),
                          "elements": lost[:50]})
    unexpected = sorted(final - ok - info - fail)
    if unexpected:
        anomalies.append({"type": "unexpected", "count": len(unexpected),
                          "elements": unexpected[:50]})
    revived = sorted(final & fail)
    if revived:
        anomalies.append({"type": "failed-but-present",
                          "count": len(revived), "elements": revived[:50]})
    stats = {"acknowledged": len(ok), "failed": len(fail),
             "indeterminate": len(info), "final_size": len(final),
             "indeterminate_present": len(final & info)}
    return (not anomalies), anomalies + [{"type": "stats", **stats}]


def check_counter(ops):
    """Each read lies between the increments acknowledged before it began
    and the increments (not failed) begun before it ended."""
    ok_done = sorted(op["j"] for op in ops
                     if op["inv"]["f"] == "add" and outcome(op) == "ok")
    started = sorted(op["i"] for op in ops
                     if op["inv"]["f"] == "add" and outcome(op) != "fail")
    anomalies, reads, final = [], 0, None
    end = float("inf")
    for op in ops:
        if op["inv"]["f"] not in ("read", "final-read") or \
                outcome(op) != "ok":
            continue
        reads += 1
        lo = bisect.bisect_left(ok_done, op["i"])
        hi = bisect.bisect_left(started, op["j"] if op["j"] is not None
                                else end)
        v = op["comp"]["value"]
        if op["inv"]["f"] == "final-read":
            final = v
        if not (lo <= v <= hi):
            anomalies.append({"type": "counter-out-of-bounds",
                              "process": op["inv"]["process"],
                              "time": op["inv"]["time"], "value": v,
                              "lower": lo, "upper": hi})
    if final is None:
        return "unknown", [{"type": "no-final-read"}]
    stats = {"type": "stats", "acknowledged": len(ok_done),
             "possible": len(started), "final": final, "reads": reads}
    return (not anomalies), anomalies[:50] + [stats]
