#!/usr/bin/python3
"""Times Mininet deploying and removing LinearTopo(k): k Linux bridges, k hosts, no controller.

Usage: mininet_deploy.py K PIDFILE [SAMPLES SPAN]   (as root, inside a fake host namespace)

Prints one JSON object on its last line of stdout, times in seconds:
  build  net.build(): host shells, switch shells, veth pairs, host addresses
  start  net.start(): the bridges (brctl addbr/addif, up)
  up     build + start: from nothing to a running network, what `dvnet up` does
  reachable   from nothing until SAMPLES pairs of hosts, at most SPAN apart, have each
              answered one ping, all pinging at once (with SAMPLES > 0): the same pairs
              as dvnet's (xtask/src/bench/deploy.rs, index_pairs)
  kernel_mib  MemTotal - MemAvailable once reachable, minus the same before, MiB
  rss_mib     this Python process's peak resident memory, MiB (the node shells not counted)
  down   net.stop()
The pid of every node shell goes to PIDFILE (one per line) before anything can fail after
it, so the caller can kill shells this script left behind; they are the only processes
Mininet starts here.

Mininet's own `Mininet.init()` calls `fixLimits()`, which raises host-wide sysctls
(fs.file-max, net.core.rmem_max, kernel.pty.max, ...). A benchmark must leave the host
alone, so it is skipped here (and replaced by a tripwire); the only limit raised is this
process's own open-file limit, which Mininet needs for one pty per node.
"""

import json
import resource
import signal
import subprocess
import sys
import time

import mininet.net
from mininet.log import setLogLevel
from mininet.net import Mininet
from mininet.nodelib import LinuxBridge
from mininet.topo import LinearTopo


def refuse(*_args, **_kwargs):
    raise RuntimeError("mininet tried to call fixLimits(), which changes host sysctls")


def terminate(signum, _frame):
    raise SystemExit(128 + signum)


def write_pids(net, path):
    with open(path, "w", encoding="ascii") as f:
        for node in list(net.hosts) + list(net.switches):
            if getattr(node, "pid", None):
                f.write(f"{node.pid}\n")


def mem_used_mib():
    fields = {}
    with open("/proc/meminfo", encoding="ascii") as f:
        for line in f:
            name, value = line.split(":", 1)
            fields[name] = int(value.split()[0])
    return (fields["MemTotal"] - fields["MemAvailable"]) / 1024


def reach(hosts, samples, span, timeout=30):
    """Pings `samples` pairs at once, again and again, until each answered once."""
    n = len(hosts)
    if n < 2 or samples <= 0:
        return
    half = max(1, min(n // 2, span))
    m = max(1, min(samples, n))
    pairs = {(0, min(n - 1, span))}
    for i in range(1, m):
        a = i * n // m
        pairs.add((a, a + half if a + half < n else a - half))
    pairs = sorted((a, b) for a, b in pairs if a != b)
    deadline = time.monotonic() + timeout

    def ping(a, b):
        return hosts[a].popen(["ping", "-c", "1", "-W", "1", "-n", "-q", hosts[b].IP()],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    pending = {p: ping(*p) for p in pairs}
    while pending:
        time.sleep(0.002)
        for p, proc in list(pending.items()):
            code = proc.poll()
            if code is None:
                continue
            if code == 0:
                del pending[p]
            elif time.monotonic() < deadline:
                pending[p] = ping(*p)
            else:
                for q in pending.values():
                    q.kill()
                raise RuntimeError(f"h{p[0] + 1} does not reach h{p[1] + 1} within {timeout} s")


def main():
    k = int(sys.argv[1])
    pidfile = sys.argv[2]
    samples = int(sys.argv[3]) if len(sys.argv) > 3 else 0
    span = int(sys.argv[4]) if len(sys.argv) > 4 else 60
    mininet.net.fixLimits = refuse
    Mininet.inited = True  # skips Mininet.init(): ensureRoot() and fixLimits()
    signal.signal(signal.SIGTERM, terminate)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    setLogLevel("warning")

    mem0 = mem_used_mib()
    t0 = time.monotonic()
    net = Mininet(
        topo=LinearTopo(k),
        switch=LinuxBridge,
        controller=None,
        autoSetMacs=False,
        build=False,
    )
    result = {"k": k, "nodes": 2 * k}
    try:
        try:
            net.build()
        finally:
            write_pids(net, pidfile)
        t1 = time.monotonic()
        net.start()
        t2 = time.monotonic()
        result.update(build=t1 - t0, start=t2 - t1, up=t2 - t0)
        if samples > 0:
            reach(net.hosts, samples, span)
            result["reachable"] = time.monotonic() - t0
            result["kernel_mib"] = mem_used_mib() - mem0
        result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    finally:
        t3 = time.monotonic()
        net.stop()
        result["down"] = time.monotonic() - t3
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
