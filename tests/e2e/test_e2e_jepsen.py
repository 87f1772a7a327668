# ctest-timeout: 200
"""A short jepsen campaign (3 nodes, partition and kill, register workload)
on a correct build must be valid, with both faults injected and the
history, EDN, plots and report written."""

import os
import sys

from jepsen_campaign import campaign, done, nemesis_kinds


def main(ringkvd, build):
    nemesis = "partition,kill" if os.geteuid() == 0 else "kill,pause"
    rc, res, text, out = campaign(ringkvd, build, [
        "--nodes", "3", "--time", "30", "--nemesis", nemesis,
        "--nemesis-interval", "2,4", "--rate", "150", "--concurrency", "8",
        "--seed", "7"], timeout=180)
    ok = False
    try:
        assert rc == 0, "exit %r" % rc
        assert res.get("valid") is True, res.get("valid")
        kinds = nemesis_kinds(res)
        for k in nemesis.split(","):
            assert "start-" + k in kinds and "stop-" + k in kinds, kinds
        c = res["counts"]
        assert c["read"]["ok"] > 100 and c["write"]["ok"] > 100, c
        assert all(v == "valid" for v in res["keys"].values()), res["keys"]
        for f in ("history.edn", "history.jsonl", "report.html",
                  "latency.png", "rate.png", "logs/n1.log"):
            assert os.path.getsize(os.path.join(out, f)) > 0, f
        with open(os.path.join(out, "history.edn")) as f:
            first = f.readline()
        assert first.startswith("{:process ") and ":type :" in first, first
        ok = True
    finally:
        done(out, ok)
    print("ok: valid, %d ops" % res["ops"])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
