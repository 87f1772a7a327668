"""Runs jepsen/run for the e2e tests and loads its results."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

TOP = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def campaign(ringkvd, build, args, timeout):
    """(exit code, results dict, output text, out dir); the out dir is
    removed by the caller once done (kept when the test fails)."""
    out = tempfile.mkdtemp(prefix="rk-jepsen-")
    cmd = [sys.executable, os.path.join(TOP, "jepsen", "run"),
           "--build", build, "--ringkvd", ringkvd, "--out", out] + args
    print("+ " + " ".join(cmd), flush=True)
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout,
                           stdin=subprocess.DEVNULL)
        text = (r.stdout + r.stderr).decode(errors="replace")
        rc = r.returncode
    except subprocess.TimeoutExpired as e:
        text = ((e.stdout or b"") + (e.stderr or b"")).decode(
            errors="replace")
        rc = "timeout"
    print(text[-6000:])
    res = {}
    try:
        with open(os.path.join(out, "results.json")) as f:
            res = json.load(f)
    except (OSError, ValueError):
        pass
    return rc, res, text, out


def nemesis_kinds(res):
    return {e["f"] for e in res.get("nemesis_events", [])}


def done(out, ok):
    if ok:
        shutil.rmtree(out, ignore_errors=True)
    else:
        print("kept the campaign's output in %s" % out)
