"""The two Twisted listings ported in examples/, run as real processes.

* ``anon_server.py`` / ``anon_client.py`` port Twisted's ``pbAnonServer`` /
  ``pbAnonClient`` (anonymous and named logins to one portal);
* ``pb6server.py`` / ``pb6client.py`` port ``pb6server`` / ``pb6client1``
  and ``pb6client2`` (two users, an avatar each).

Each pair runs pbgreen to pbgreen, then once against the ORIGINAL Twisted
program on each side: Twisted's server with the ported client, and the
ported server with Twisted's client. The originals are kept verbatim (under
a header) in tests/examples/twisted_listings/ and started through
``run_listing.py`` there, which changes only their fixed port (8800: a
Twisted server listens on a free port and prints ``listening on PORT``, a
Twisted client connects to the port the test gives it) and their ``str``
credentials, which Twisted itself cannot hash on Python 3 (see that file).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pbgreen.testing.processes import Child, ChildError, start

from example_output import (CLIENT_TIMEOUT, READY, STARTUP_TIMEOUT, STOP_TIMEOUT, assert_lines,
                            client_stdout, lines)

LISTINGS = Path(__file__).resolve().parent / "twisted_listings"
RUNNER = LISTINGS / "run_listing.py"
WAIT = 20.0   # for a line another process prints after a call it made


def twisted_argv(listing: str, *args: str) -> list[str]:
    return [sys.executable, str(RUNNER), str(LISTINGS / listing), *args]


@pytest.fixture
def twisted_server():
    """twisted_server(listing): one of Twisted's server listings, on a free port."""
    servers: list[Child] = []

    def start_one(listing: str) -> Child:
        try:
            server = start(twisted_argv(listing), ready=READY, timeout=STARTUP_TIMEOUT,
                           cwd=LISTINGS)
        except ChildError as exc:
            pytest.fail(str(exc), pytrace=False)
        servers.append(server)
        return server

    yield start_one
    for server in servers:
        server.stop(timeout=STOP_TIMEOUT)


def run_twisted_client(listing: str, port: int) -> str:
    """Run a Twisted client listing that stops by itself; its stdout (it logs there)."""
    result = subprocess.run(twisted_argv(listing, str(port)), capture_output=True, text=True,
                            timeout=CLIENT_TIMEOUT, cwd=LISTINGS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert_twisted_clean(result.stdout + result.stderr)
    return result.stdout


def assert_twisted_clean(text: str) -> None:
    """Twisted reports errors in Deferreds as logged tracebacks, not exit codes."""
    for sign in ("Traceback", "Unhandled", "Error"):
        assert sign not in text, text


def anon_client_lines(text: str, user: str = "user1") -> None:
    """Both logins of anon_client.py, each in order; the two may interleave."""
    got = lines(text)
    for label in ("anonymous", user):
        mine = [line for line in got if line.startswith(label + ":")]
        assert_lines("\n".join(mine), [
            rf"{label}: got perspective ref: <RemoteReference \d+ at .+>",
            rf"{label}: asking it to foo\(13\)",
        ], what=f"{label}'s lines")
    assert len(got) == 4, text


# ------------------------------------------------------------------ pbAnon


def test_anon_ported_server_and_client(start_server, run_client):
    server = start_server("anon_server.py")
    anon_client_lines(client_stdout(run_client("anon_client.py", server.port)))
    server.stop()
    got = assert_lines(server.stdout, [
        rf"listening on {server.port}",
        r"I am (Anonymous|user1)\.  perspective_foo\(13\) called on <__main__\.MyPerspective .+>\.",
        r"I am (Anonymous|user1)\.  perspective_foo\(13\) called on <__main__\.MyPerspective .+>\.",
    ])
    assert sorted(line.split(".")[0] for line in got[1:]) == ["I am Anonymous", "I am user1"]


def test_anon_client_reports_a_refused_login_and_the_other_still_runs(start_server, run_client):
    server = start_server("anon_server.py")
    result = run_client("anon_client.py", server.port, "user2", "wrong")
    assert result.returncode == 1, result
    assert lines(result.stderr) == ["user2 login refused"]
    assert_lines(result.stdout, [
        r"anonymous: got perspective ref: .+",
        r"anonymous: asking it to foo\(13\)",
    ])
    assert server.wait_for_text("I am Anonymous.", timeout=WAIT), server.describe()


def test_anon_twisted_server_with_the_ported_client(twisted_server, run_client):
    server = twisted_server("pbAnonServer.py")
    anon_client_lines(client_stdout(run_client("anon_client.py", server.port)))
    # Twisted's realm names the avatar with the raw avatar id, bytes.
    assert server.wait_for_text("I am b'user1'.  perspective_foo(13)", timeout=WAIT), (
        server.describe())
    assert server.wait_for_text("I am Anonymous.  perspective_foo(13)", timeout=WAIT), (
        server.describe())
    server.stop()
    assert_twisted_clean(server.stdout + server.stderr)


def test_anon_ported_server_with_the_twisted_client(start_server):
    server = start_server("anon_server.py")
    out = run_twisted_client("pbAnonClient.py", server.port)
    assert len(re.findall(r"got perspective1 ref: <twisted\.spread\.pb\.RemoteReference", out)) == 2
    assert out.count("asking it to foo(13)") == 2
    # gatherResults waited for both calls: the server ran both before the client stopped.
    server.stop()
    foo = [line for line in lines(server.stdout) if "perspective_foo(13)" in line]
    assert sorted(line.split(".")[0] for line in foo) == ["I am Anonymous", "I am user1"], (
        server.stdout)


# ------------------------------------------------------------------ pb6


def test_pb6_ported_server_and_two_users(start_server, run_client):
    server = start_server("pb6server.py")
    first = run_client("pb6client.py", server.port)
    second = run_client("pb6client.py", server.port, "user2", "pass2", "14")
    assert_lines(client_stdout(first), [
        r"got perspective ref for user1: <RemoteReference \d+ at .+>",
        r"asking it to foo\(13\)",
    ])
    assert_lines(client_stdout(second), [
        r"got perspective ref for user2: <RemoteReference \d+ at .+>",
        r"asking it to foo\(14\)",
    ])
    refused = run_client("pb6client.py", server.port, "user2", "pass1", "15")
    assert (refused.returncode, lines(refused.stderr)) == (1, ["login refused for user2"])
    server.stop()
    got = assert_lines(server.stdout, [
        rf"listening on {server.port}",
        r"I am user1: perspective_foo\(13\) called on (<__main__\.MyPerspective .+>)",
        r"I am user2: perspective_foo\(14\) called on (<__main__\.MyPerspective .+>)",
    ])
    assert got[1].split(" on ")[1] != got[2].split(" on ")[1]   # an avatar each


def test_pb6_twisted_server_with_the_ported_client(twisted_server, run_client):
    server = twisted_server("pb6server.py")
    for user, password, number in [("user1", "pass1", "13"), ("user2", "pass2", "14")]:
        result = run_client("pb6client.py", server.port, user, password, number)
        assert_lines(client_stdout(result), [
            rf"got perspective ref for {user}: .+",
            rf"asking it to foo\({number}\)",
        ])
        # The call returned, so Twisted's perspective_foo has run and printed.
        assert server.wait_for_text(f"I am b'{user}' perspective_foo( {number} )",
                                    timeout=WAIT), server.describe()
    server.stop()
    assert_twisted_clean(server.stdout + server.stderr)


def test_pb6_ported_server_with_the_twisted_clients(start_server):
    server = start_server("pb6server.py")
    for listing, user, number in [("pb6client1.py", "user1", 13), ("pb6client2.py", "user2", 14)]:
        # Twisted's pb6 clients never stop their reactor: wait for the
        # answer to reach the client, then stop it.
        with Child(twisted_argv(listing, str(server.port)), cwd=LISTINGS) as client:
            assert server.wait_for_text(f"I am {user}: perspective_foo({number})",
                                        timeout=WAIT), server.describe() + client.describe()
            assert client.wait_for_text("answered foo", timeout=WAIT), client.describe()
            client.stop(timeout=STOP_TIMEOUT)
        assert_twisted_clean(client.stdout + client.stderr)
    server.stop()
    assert server.stderr == ""
