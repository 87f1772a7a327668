# ctest-timeout: 200
"""The harness must be able to fail: with --unsafe-test-local-reads the
nodes answer reads from local state, so isolating a shard's leader while
read-only processes keep reading from it and the majority takes writes must
make the campaign report the history invalid (exit 1), naming the key."""

import os
import sys

from jepsen_campaign import campaign, done


def main(ringkvd, build):
    if os.geteuid() != 0:
        print("skipped: the partition nemesis needs root (iptables)")
        return
    rc, res, text, out = campaign(ringkvd, build, [
        "--nodes", "3", "--shards", "1", "--time", "25",
        "--nemesis", "partition", "--nemesis-interval", "3,6",
        "--partition-mode", "leader",
        "--rate", "300", "--concurrency", "8", "--readers", "4",
        "--ops-per-key", "100000", "--seed", "11",
        "--unsafe-server-flag=--unsafe-test-local-reads"], timeout=180)
    ok = False
    try:
        assert rc == 1, "exit %r (want 1: invalid)" % rc
        assert res.get("valid") is False, res.get("valid")
        bad = [a for a in res["anomalies"] if a["type"] == "nonlinearizable"]
        assert bad and bad[0]["window"], res["anomalies"]
        assert "is not linearizable" in text, "no checker report printed"
        ok = True
    finally:
        done(out, ok)
    print("ok: the stale reads were caught (key %s)" % bad[0]["key"])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
