#!/usr/bin/env python3
"""A tour of the examples: run each server/client pair as real processes.

`make demo` runs this. For each pair it starts the server on a free port
(port 0; the server prints the port it got), runs the client against it,
stops the server, and shows what each side printed. Exits 0 when every
client succeeded; leaves no server running either way.
"""
import shlex
import subprocess
import sys
import time
from pathlib import Path

from pbgreen.testing.processes import Child, start

HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 30.0
CLIENT_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
READY = r"^listening on (\d+)$"  # what every server script prints first

# (title, server script, client argument lists, what to wait for before
# stopping the server: None, ("stderr", text) or "exit" for a server that
# stops itself). A client entry that is a tuple of argument lists runs
# those clients at the same time.
TOUR = [
    ("Basic example: one remote call",
     "echo_server.py", [["echo_client.py"]], None),
    ("Passing more references",
     "pb1server.py", [["pb1client.py"]], None),
    ("References can come back to you",
     "pb2server.py", [["pb2client.py"]], None),
    ("References to client-side objects (the server calls back mid-call)",
     "pb3server.py", [["pb3client.py"]], None),
    ("Raising remote exceptions: expected (pb.Error), then unexpected",
     "exc_server.py", [["exc_client.py", "broken"], ["exc_client.py", "broken2"]],
     ("stderr", "Peer Will Receive PB Traceback")),
    ("try/except instead of errbacks (the server shuts itself down)",
     "trap_server.py", [["trap_client.py"]], "exit"),
    ("Passing objects by value (pb.Copyable -> pb.RemoteCopy)",
     "copy_receiver.py", [["copy_sender.py"]], None),
    ("Controlling the copied state (classes in a shared module)",
     "copy2_receiver.py", [["copy2_sender.py"]], None),
    ("A copy kept in sync (pb.Cacheable -> pb.RemoteCache, then shutdown)",
     "cache_receiver.py", [["cache_sender.py"]], "exit"),
    ("Logging in: a chat room (pb.Portal, pb.Avatar, the mind called back)",
     "chat_server.py",
     [(["chat_client.py", "alice", "wonderland", "--wait-for", "bob", "hello from alice"],
       ["chat_client.py", "bob", "builder", "--wait-for", "alice", "hi alice, bob here"])],
     None),
]


def show(heading, text):
    print(f"--- {heading} ---")
    print(text.rstrip("\n") if text.strip() else "(nothing)")


def run_clients(argvs, port):
    """Run client scripts at the same time; [(status, output)] in order.

    A client still running after CLIENT_TIMEOUT is killed (status None).
    """
    clients = []
    try:
        for argv in argvs:
            clients.append(Child(
                [sys.executable, str(HERE / argv[0]), "127.0.0.1", str(port), *argv[1:]],
                stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=HERE))
        deadline = time.monotonic() + CLIENT_TIMEOUT
        results = []
        for client in clients:
            status = client.wait(max(0.0, deadline - time.monotonic()))
            if status is None:
                client.kill()
                results.append((None, client.stdout + f"(killed after {CLIENT_TIMEOUT} s)\n"))
            else:
                results.append((status, client.stdout))
        return results
    finally:
        for client in clients:
            client.kill()


def run_pair(title, server_script, clients, wait_for):
    print("=" * 72)
    print(title)
    print("=" * 72, flush=True)
    ok = True
    server = None
    try:
        server = start([sys.executable, str(HERE / server_script), "0"], ready=READY,
                       timeout=STARTUP_TIMEOUT, cwd=HERE)
        port = server.port
        for step in clients:
            together = step if isinstance(step, tuple) else (step,)
            for argv, (status, output) in zip(together, run_clients(together, port)):
                show(f"$ python {shlex.join(argv[:1] + ['127.0.0.1', str(port)] + argv[1:])}",
                     output)
                if status != 0:
                    print(f"!!! client exited with status {status}")
                    ok = False
        if isinstance(wait_for, tuple):
            # Give the server a moment to log it (it may log after answering).
            server.wait_for_text(wait_for[1], stream="stderr", timeout=5.0)
    except Exception as exc:  # ChildError (with what the server printed), OSError, ...
        print(f"!!! {type(exc).__name__}: {exc}")
        ok = False
    finally:
        if server is not None:
            if wait_for == "exit" and ok:
                server.wait(STOP_TIMEOUT)  # it stops itself
            status = server.stop(timeout=STOP_TIMEOUT)
    if server is None:
        print()
        return False
    if wait_for == "exit" and status != 0:
        print(f"!!! {server_script} did not stop by itself (status {status})")
        ok = False
    show(f"{server_script} printed", server.stdout)
    if server.stderr:
        show(f"{server_script} logged (stderr)", server.stderr)
    print(flush=True)
    return ok


def main():
    results = [run_pair(*pair) for pair in TOUR]
    failed = results.count(False)
    if failed:
        print(f"{failed} of {len(results)} examples failed")
        return 1
    print(f"all {len(results)} examples ran")
    return 0


if __name__ == "__main__":
    sys.exit(main())
