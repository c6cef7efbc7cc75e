"""How much a password-guessing client costs a PB login server.

One connection sends failed logins (wrong password) back to back for a few
seconds while a second, logged-in client keeps calling its avatar. pbgreen is
measured with its login backoff (the default; pbgreen has no public setting
to turn it off, and the benchmark does not patch pbgreen). Reported: failed
logins per second one connection can force, server CPU per attempt (from
/proc, user+system time of the server process), and the bystander's median
and worst call latency meanwhile. The same for Twisted's
PBServerFactory(portal) in the same run.

    .venv/bin/python benchmarks/login_bruteforce.py [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from pbgreen.testing.processes import start

SERVER_PBGREEN = r"""
import sys, gevent, pbgreen as pb
class Avatar(pb.Avatar):
    def perspective_ping(self): return b"pong"
class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        return interfaces[0], Avatar(), lambda: None
portal = pb.Portal(Realm(), [pb.InMemoryPasswordChecker(alice=b"secret", bob=b"pw")])
server = pb.PBServer(portal, port=0, host="127.0.0.1")
server.start()
print("PORT", server.address[1], flush=True)
gevent.get_hub().threadpool.spawn(sys.stdin.read).get()  # wait without blocking the hub
server.stop()
"""

SERVER_TWISTED = r"""
import sys, threading
from twisted.spread import pb
from twisted.cred import portal as tportal, checkers
from twisted.internet import reactor
from zope.interface import implementer
class Avatar(pb.Avatar):
    def perspective_ping(self): return b"pong"
@implementer(tportal.IRealm)
class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        return pb.IPerspective, Avatar(), lambda: None
checker = checkers.InMemoryUsernamePasswordDatabaseDontUse(alice=b"secret", bob=b"pw")
port = reactor.listenTCP(0, pb.PBServerFactory(tportal.Portal(Realm(), [checker])),
                         interface="127.0.0.1")
print("PORT", port.getHost().port, flush=True)
threading.Thread(target=lambda: (sys.stdin.read(), reactor.callFromThread(reactor.stop)),
                 daemon=True).start()
reactor.run()
"""


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(server_code: str, seconds: float) -> dict[str, float]:
    import gevent

    import pbgreen as pb

    # The server leaves when its stdin closes; stop() waits 10 s for that.
    with start([sys.executable, "-c", server_code], stderr=subprocess.DEVNULL, grace=10,
               label="login server") as server:
        port = server.port
        attacker = pb.PBClient("127.0.0.1", port, timeout=10)
        bystander_client = pb.PBClient("127.0.0.1", port, timeout=10)
        bystander = bystander_client.login(pb.UsernamePassword(b"bob", b"pw"))
        latencies: list[float] = []
        stop = time.monotonic() + seconds

        def keep_calling() -> None:
            while time.monotonic() < stop:
                started = time.perf_counter()
                bystander.callRemote("ping")
                latencies.append(time.perf_counter() - started)
                gevent.sleep(0.005)

        watcher = gevent.spawn(keep_calling)
        cpu_before = cpu_seconds(server.pid)
        started = time.perf_counter()
        attempts = 0
        while time.monotonic() < stop:
            try:
                attacker.login(pb.UsernamePassword(b"alice", b"guess%d" % attempts))
            except pb.UnauthorizedLogin:
                attempts += 1
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(server.pid) - cpu_before
        watcher.join()
        attacker.close()
        bystander_client.close()
        return {"attempts_per_s": attempts / elapsed, "server_cpu_us": cpu / attempts * 1e6,
                "bystander_median_ms": statistics.median(latencies) * 1e3,
                "bystander_max_ms": max(latencies) * 1e3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    rows = {"pbgreen": measure(SERVER_PBGREEN, args.seconds),
            "Twisted PB": measure(SERVER_TWISTED, args.seconds)}
    print(f"{'server':<21}{'failed logins/s':>17}{'server CPU/attempt':>20}"
          f"{'bystander median':>18}{'bystander max':>15}")
    for name, row in rows.items():
        print(f"{name:<21}{row['attempts_per_s']:>17.1f}{row['server_cpu_us']:>17.0f} us"
              f"{row['bystander_median_ms']:>15.2f} ms{row['bystander_max_ms']:>12.2f} ms")
    print("(pbgreen without its login backoff is not measured: pbgreen has no public "
          "setting for it)")


if __name__ == "__main__":
    main()
