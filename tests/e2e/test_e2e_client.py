#!/usr/bin/env python3
"""End-to-end tests of libringkv against a real 3-node cluster.

1. examples/hello (the embedding example) runs and exits 0.
2. Exactly-once: a put whose first reply is dropped (the library's test-only
   switch) is retried with the same session seq and applied once: the retry
   is answered as a duplicate with the original revision, and the key's
   revision and create revision are that one write.
3. Resilience: a client runs puts and gets for 14 s while one node is
   SIGKILLed and, 4 s later, restarted. Every call succeeds within its
   deadline; the breaker of the dead node opens, and closes again once the
   node is back.

Usage: test_e2e_client.py PATH/TO/ringkvd BUILD_DIR
"""
# ctest-timeout: 180

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkclient as rk  # noqa: E402

SHARDS = 4

check = rk.check


def main():
    binary, build = sys.argv[1], sys.argv[2]
    check_bin = os.path.join(build, "tests", "client", "client-check")
    hello = os.path.join(build, "examples", "ringkv-example-hello")
    work = tempfile.mkdtemp(prefix="rk-e2e-client-")
    cl = rk.Cluster(binary, work, n_nodes=3, shards=SHARDS)
    eps = ",".join("127.0.0.1:%d" % cl.client_port(i) for i in (1, 2, 3))
    ok = False
    load = None
    try:
        cl.start_all()
        leaders = cl.wait_leaders(SHARDS + 1)

        out = subprocess.run([hello, eps], capture_output=True, text=True,
                             timeout=60)
        check(out.returncode == 0, "hello failed: %s %s" % (out.stdout,
                                                             out.stderr))
        check("get hello -> world" in out.stdout, out.stdout)
        print("hello example: ok")

        out = subprocess.run([check_bin, eps, "once-put", "eo-key", "v1"],
                             capture_output=True, text=True, timeout=60)
        check(out.returncode == 0, out.stdout + out.stderr)
        m = re.search(r"put status=OK revision=(\d+) duplicate=1 "
                      r"retries=(\d+)", out.stdout)
        check(m, "the dropped reply was not retried as a duplicate: " +
              out.stdout)
        rev = int(m.group(1))
        check(int(m.group(2)) >= 1, "no retry: " + out.stdout)
        m = re.search(r"get revision=(\d+) create_revision=(\d+) value=v1",
                      out.stdout)
        check(m and int(m.group(1)) == rev and int(m.group(2)) == rev,
              "key shows more than one write: " + out.stdout)
        print("exactly-once: put applied once at revision %d" % rev)

        load = subprocess.Popen([check_bin, eps, "load", "14"],
                                stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        time.sleep(2.5)
        # The node leading the most shards: its death is felt at once.
        led = {}
        for node in leaders.values():
            led[node] = led.get(node, 0) + 1
        victim = max(sorted(led), key=lambda n: led[n])
        cl.kill(victim)
        t_kill = time.time()
        time.sleep(4.0)
        cl.start(victim)
        t_back = time.time()
        stdout, stderr = load.communicate(timeout=90)
        load = None
        lines = stdout.splitlines()
        states = []
        for ln in lines:
            m = re.search(r"breakers=.*?\b%d:([a-z-]+)" % victim, ln)
            if m:
                states.append(m.group(1))
        done = [ln for ln in lines if ln.startswith("done ")]
        check(done, "load did not finish: %s %s" % (stdout[-500:], stderr))
        print(done[0])
        check(" err=0 " in done[0], "calls failed during the kill: " +
              stderr[-2000:])
        check("open" in states, "breaker of node %d never opened: %s" %
              (victim, sorted(set(states))))
        first_open = states.index("open")
        check("closed" in states[first_open:],
              "breaker of node %d did not close after it came back: %s"
              % (victim, states[first_open:][-20:]))
        check(states[-1] == "closed", "breaker ends %s" % states[-1])
        print("breaker: opened after the kill, closed after the restart "
              "(%.1f s later)" % (t_back - t_kill))
        ok = True
    finally:
        if load is not None:
            load.kill()
            load.wait()
        cl.stop_all()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print("kept %s" % work)
    print("e2e_client: ok")


if __name__ == "__main__":
    main()
