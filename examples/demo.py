#!/usr/bin/env python3
"""A tour of the examples: run each server/client pair as real processes.

`make demo` runs this. For each pair it starts the server on a free port
(port 0; the server prints the port it got), runs the client against it,
stops the server, and shows what each side printed. Exits 0 when every
client succeeded; leaves no server running either way.
"""
import re
import shlex
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 30.0
CLIENT_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0

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


class Server:
    """A server script in a subprocess; two threads collect its output."""

    def __init__(self, script):
        self.script = script
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / script), "0"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=HERE,
        )
        self.changed = threading.Condition()
        self.out, self.err = [], []
        self.open_pipes = 2
        self.threads = [
            threading.Thread(target=self._drain, args=(self.proc.stdout, self.out)),
            threading.Thread(target=self._drain, args=(self.proc.stderr, self.err)),
        ]
        for t in self.threads:
            t.start()

    def _drain(self, pipe, lines):
        for line in pipe:
            with self.changed:
                lines.append(line)
                self.changed.notify_all()
        with self.changed:
            self.open_pipes -= 1
            self.changed.notify_all()

    def port(self):
        """The port from the server's `listening on PORT` line."""
        def found():
            for line in self.out:
                m = re.fullmatch(r"listening on (\d+)", line.strip())
                if m:
                    return int(m.group(1))
            return None if self.open_pipes else -1

        with self.changed:
            port = self.changed.wait_for(found, timeout=STARTUP_TIMEOUT)
        if port is None:
            raise RuntimeError(f"{self.script} did not say which port it listens on")
        if port == -1:
            raise RuntimeError(f"{self.script} exited before listening")
        return port

    def wait_stderr(self, text, timeout=5.0):
        """Give the server a moment to log `text` (it may log after answering)."""
        with self.changed:
            self.changed.wait_for(lambda: text in "".join(self.err), timeout=timeout)

    def stop(self, stops_itself=False):
        """Stop the server unless it stops itself, then reap it."""
        if stops_itself:
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for t in self.threads:
            t.join()
        return self.proc.returncode


def show(heading, text):
    print(f"--- {heading} ---")
    print(text.rstrip("\n") if text.strip() else "(nothing)")


def run_clients(argvs, port):
    """Run client scripts at the same time; [(status, output)] in order.

    A client still running after CLIENT_TIMEOUT is killed (status None).
    """
    procs = []
    try:
        for argv in argvs:
            cmd = [sys.executable, str(HERE / argv[0]), "127.0.0.1", str(port), *argv[1:]]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, cwd=HERE))
        results = []
        for proc in procs:
            try:
                output, _ = proc.communicate(timeout=CLIENT_TIMEOUT)
                results.append((proc.returncode, output))
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
                results.append((None, output + f"(killed after {CLIENT_TIMEOUT} s)\n"))
        return results
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def run_pair(title, server_script, clients, wait_for):
    print("=" * 72)
    print(title)
    print("=" * 72, flush=True)
    ok = True
    server = Server(server_script)
    try:
        port = server.port()
        for step in clients:
            together = step if isinstance(step, tuple) else (step,)
            for argv, (status, output) in zip(together, run_clients(together, port)):
                show(f"$ python {shlex.join(argv[:1] + ['127.0.0.1', str(port)] + argv[1:])}",
                     output)
                if status != 0:
                    print(f"!!! client exited with status {status}")
                    ok = False
        if isinstance(wait_for, tuple):
            server.wait_stderr(wait_for[1])
    except Exception as exc:
        print(f"!!! {type(exc).__name__}: {exc}")
        ok = False
    finally:
        status = server.stop(stops_itself=(wait_for == "exit" and ok))
    if wait_for == "exit" and status != 0:
        print(f"!!! {server_script} did not stop by itself (status {status})")
        ok = False
    show(f"{server_script} printed", "".join(server.out))
    if server.err:
        show(f"{server_script} logged (stderr)", "".join(server.err))
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
