"""report.html with gnuplot PNGs: latency of every op over time by outcome
(nemesis intervals shaded) and throughput over time."""

import html
import json
import os
import subprocess

from check import outcome

COLOURS = {"ok": "#2a9d3a", "fail": "#d62828", "info": "#f4a300"}


def intervals(nemesis_events, t_end):
    """[(start s, end s, description)] from start/stop event pairs."""
    out, open_ = [], {}
    for e in nemesis_events:
        phase = e["f"].split("-", 1)[0]
        if phase == "start":
            open_[e["value"]] = e["time"] / 1e9
        elif phase == "stop" and e["value"] in open_:
            out.append((open_.pop(e["value"]), e["time"] / 1e9, e["value"]))
    for desc, t in open_.items():
        out.append((t, t_end, desc))
    return sorted(out)


def plots(ops, nemesis_events, outdir, title):
    """Writes latency.png and rate.png; returns the names written."""
    dat = os.path.join(outdir, "plot")
    os.makedirs(dat, exist_ok=True)
    t_end = 1.0
    files = {}
    buckets = {}
    for o in COLOURS:
        files[o] = open(os.path.join(dat, "latency-%s.dat" % o), "w")
    for op in ops:
        if op["inv"]["f"] == "final-read" or op["inv"]["process"] >= 1000000:
            continue
        o = outcome(op)
        t0 = op["inv"]["time"] / 1e9
        t1 = op["comp"]["time"] / 1e9 if op["comp"] else None
        if t1 is not None:
            files[o].write("%.6f %.3f\n" % (t0, max(0.01, (t1 - t0) * 1e3)))
            t_end = max(t_end, t1)
            b = buckets.setdefault(int(t1), {"ok": 0, "fail": 0, "info": 0})
            b[o] += 1
    for f in files.values():
        f.close()
    with open(os.path.join(dat, "rate.dat"), "w") as f:
        for sec in range(0, int(t_end) + 1):
            b = buckets.get(sec, {"ok": 0, "fail": 0, "info": 0})
            f.write("%d %d %d %d\n" % (sec, b["ok"], b["fail"], b["info"]))
    shade = ""
    for k, (a, b, _) in enumerate(intervals(nemesis_events, t_end), 1):
        shade += ("set object %d rect from %.3f, graph 0 to %.3f, graph 1 "
                  "fc rgb '#888888' fs transparent solid 0.18 noborder\n"
                  % (k, a, b))
    plot_lat = ", ".join(
        "'%s/latency-%s.dat' using 1:2 with points pt 7 ps 0.3 lc rgb '%s' "
        "title '%s'" % (dat, o, c, o) for o, c in COLOURS.items()
        if os.path.getsize(os.path.join(dat, "latency-%s.dat" % o)))
    plot_rate = ", ".join(
        "'%s/rate.dat' using 1:%d with lines lw 2 lc rgb '%s' title '%s'" %
        (dat, col, c, o) for col, (o, c) in enumerate(COLOURS.items(), 2))
    script = """set terminal png size 1100,420
set grid
set key outside right
set xlabel 'time (s)'
%(shade)s
set output '%(out)s/latency.png'
set title '%(title)s: latency (shaded: faults)'
set ylabel 'latency (ms)'
set logscale y
plot %(plot_lat)s
unset logscale y
set output '%(out)s/rate.png'
set title '%(title)s: throughput (ops completed per second)'
set ylabel 'ops/s'
plot %(plot_rate)s
""" % {"shade": shade, "out": outdir, "title": title.replace("'", ""),
       "plot_lat": plot_lat or "1/0 notitle", "plot_rate": plot_rate}
    with open(os.path.join(dat, "plots.gp"), "w") as f:
        f.write(script)
    r = subprocess.run(["gnuplot", os.path.join(dat, "plots.gp")],
                       capture_output=True)
    if r.returncode != 0:
        return [], r.stderr.decode()[:500]
    return ["latency.png", "rate.png"], ""


def write_html(results, outdir, images):
    e = html.escape
    valid = results["valid"]
    colour = {True: "#2a9d3a", False: "#d62828"}.get(valid, "#f4a300")
    rows = "".join(
        "<tr><td>%s</td><td>%d</td><td>%d</td><td>%d</td></tr>" %
        (e(f), c["ok"], c["fail"], c["info"])
        for f, c in sorted(results["counts"].items()))
    nem = "".join(
        "<tr><td>%.3f</td><td>%s</td><td>%s</td></tr>" %
        (ev["time"] / 1e9, e(ev["f"]), e(str(ev["value"])))
        for ev in results["nemesis_events"])
    anomalies = e(json.dumps(results["anomalies"], indent=1))
    keys = results.get("keys", {})
    bad = {k: v for k, v in keys.items() if v != "valid"}
    imgs = "".join('<p><img src="%s"></p>' % i for i in images)
    page = """<!doctype html><html><head><meta charset="utf-8">
<title>ringkv jepsen: %(title)s</title>
<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;
border-bottom:1px solid #ddd;text-align:left}pre{background:#f6f6f6;
padding:1em}</style></head><body>
<h1>ringkv jepsen: %(title)s</h1>
<p style="font-size:1.4em">valid: <b style="color:%(colour)s">%(valid)s</b></p>
<p>%(cmd)s</p>
<p>%(nodes)d nodes, %(shards)d shards, %(secs)s s, workload %(wl)s,
nemesis %(nem_kinds)s, %(nops)d ops, %(nkeys)d keys checked
(%(nbad)d not valid: %(bad)s)</p>
%(imgs)s
<h2>Operations</h2><table><tr><th>f</th><th>ok</th><th>fail</th>
<th>info</th></tr>%(rows)s</table>
<h2>Anomalies</h2><pre>%(anomalies)s</pre>
<h2>Nemesis events</h2><table><tr><th>time (s)</th><th>f</th>
<th>value</th></tr>%(nem)s</table>
<p>Files: <a href="results.json">results.json</a>,
<a href="history.edn">history.edn</a>,
<a href="history.jsonl">history.jsonl</a>, <a href="logs/">node logs</a>.</p>
</body></html>
""" % {"title": e(results["title"]), "colour": colour, "valid": e(str(valid)),
       "cmd": e(results["command"]), "nodes": results["nodes"],
       "shards": results["shards"], "secs": results["time"],
       "wl": e(results["workload"]), "nem_kinds": e(results["nemesis"]),
       "nops": results["ops"], "nkeys": len(keys), "nbad": len(bad),
       "bad": e(json.dumps(bad)[:500]), "imgs": imgs, "rows": rows,
       "anomalies": anomalies, "nem": nem}
    with open(os.path.join(outdir, "report.html"), "w") as f:
        f.write(page)
