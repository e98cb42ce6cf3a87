#!/usr/bin/python3
"""Times Mininet deploying and removing LinearTopo(k): k Linux bridges, k hosts, no controller.

Usage: mininet_deploy.py K PIDFILE   (as root, inside a fake host namespace)

Prints one JSON object on its last line of stdout, times in seconds:
  build  net.build(): host shells, switch shells, veth pairs, host addresses
  start  net.start(): the bridges (brctl addbr/addif, up)
  up     build + start: from nothing to a running network, what `dvnet up` does
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


def main():
    k = int(sys.argv[1])
    pidfile = sys.argv[2]
    mininet.net.fixLimits = refuse
    Mininet.inited = True  # skips Mininet.init(): ensureRoot() and fixLimits()
    signal.signal(signal.SIGTERM, terminate)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    setLogLevel("warning")

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
    finally:
        t3 = time.monotonic()
        net.stop()
        result["down"] = time.monotonic() - t3
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
