"""``pbgreen serve`` and ``pbgreen call`` as real processes."""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pbgreen.testing.processes import Child, start

HERE = Path(__file__).resolve().parent
TWISTED_SERVER = HERE.parent / "interop" / "twisted_server.py"


def run(*args, cwd=None, env=None, timeout=30):
    return subprocess.run([sys.executable, "-m", "pbgreen", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("target", ["shopapp:shop", "shopapp:Shop", "shopapp:make_shop"])
def test_serve_an_instance_a_class_or_a_factory(serve, target):
    _, port = serve(target)
    result = run("call", f"127.0.0.1:{port}", "add", "'tea'", "-k", "price=3")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[('tea', 3)]\n"


def test_call_arguments_json_literals_and_words(serve):
    _, port = serve("shopapp:shop")
    result = run("call", f"127.0.0.1:{port}", "echo", "42", '{"k": [1, 2]}', "b'raw'",
                 "(1, 2)", "plain", "--json")
    assert result.returncode == 1 and "the answer is not JSON" in result.stderr
    assert "Traceback" not in result.stderr
    result = run("call", f"127.0.0.1:{port}", "echo", "42", '{"k": [1, 2]}', "b'raw'",
                 "(1, 2)", "plain")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[42, {'k': [1, 2]}, b'raw', (1, 2), 'plain']\n"


def test_remote_error_goes_to_stderr_with_status_1(serve):
    _, port = serve("shopapp:shop")
    result = run("call", f"127.0.0.1:{port}", "fail")
    assert result.returncode == 1
    assert result.stdout == ""
    assert "remote error: builtins.ValueError: out of stock" in result.stderr


def test_unreachable_server_is_status_2():
    import socket
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    result = run("call", f"127.0.0.1:{port}", "anything", "--timeout", "5")
    assert result.returncode == 2
    assert f"127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_stops_cleanly_on_sigterm_and_sigint(serve, signum):
    process, port = serve("shopapp:shop")
    process.signal(signum)
    assert process.wait(15) == 0
    assert "Traceback" not in process.stderr, process.stderr
    assert f"{signal.Signals(signum).name}: stopping" in process.stderr


def test_sigterm_lets_a_running_call_finish(serve):
    """Graceful stop: the call under way when SIGTERM comes gets its answer (PBServer.stop(timeout=))."""
    server, port = serve("slowapp:Slow")
    with Child([sys.executable, "-m", "pbgreen", "call", f"127.0.0.1:{port}", "work", "1"]) as caller:
        server.expect("^WORK STARTED$", timeout=20)
        server.signal(signal.SIGTERM)
        assert caller.wait(20) == 0, caller.stderr
        assert caller.stdout == "'work done'\n"
    assert server.wait(20) == 0
    assert "Traceback" not in server.stderr, server.stderr


def test_a_second_signal_stops_at_once(serve):
    """While a graceful stop waits for a running call, a second SIGINT exits at once (status 1)."""
    server, port = serve("slowapp:Slow", "--graceful-timeout", "60")
    with Child([sys.executable, "-m", "pbgreen", "call", f"127.0.0.1:{port}", "work", "60",
                "--timeout", "60"]) as caller:
        server.expect("^WORK STARTED$", timeout=20)
        server.signal(signal.SIGINT)
        assert server.wait_for_text("SIGINT: stopping", stream="stderr", timeout=10)
        assert server.wait(0.5) is None, "the first SIGINT did not wait for the running call"
        server.signal(signal.SIGINT)
        assert server.wait(10) == 1
        assert "Traceback" not in server.stderr, server.stderr
        assert caller.wait(20) == 2


def test_timeout_bounds_a_hung_call(serve, one_line_error):
    server, port = serve("slowapp:Slow", "--graceful-timeout", "0")
    began = time.monotonic()
    result = run("call", f"127.0.0.1:{port}", "hang", "--timeout", "1")
    took = time.monotonic() - began
    one_line_error(result, f"calling hang at 127.0.0.1:{port} timed out after 1 s")
    assert took < 8, f"pbgreen call took {took:.1f} s with --timeout 1"
    # the deadline went with the call: the pbgreen server stopped the method
    server.expect("^HANG ENDED$", timeout=10)
    result = run("call", f":{port}", "work", "0")  # the server is fine; :PORT is this machine
    assert (result.returncode, result.stdout) == (0, "'work done'\n"), result.stderr


def test_ctrl_c_interrupts_a_call(serve):
    server, port = serve("slowapp:Slow", "--graceful-timeout", "0")
    with Child([sys.executable, "-m", "pbgreen", "call", f"127.0.0.1:{port}", "work", "60",
                "--timeout", "60"]) as caller:
        server.expect("^WORK STARTED$", timeout=20)
        caller.signal(signal.SIGINT)
        assert caller.wait(10) == 130
        assert caller.stderr == "pbgreen call: interrupted\n"


def test_a_remote_error_stays_status_1_under_a_timeout(serve):
    _, port = serve("slowapp:Slow")
    result = run("call", f"127.0.0.1:{port}", "fail", "--timeout", "5")
    assert result.returncode == 1
    assert result.stderr == "remote error: builtins.ValueError: broken on purpose\n"


def test_import_lets_registered_copies_be_printed(serve, app_dir, one_line_error):
    _, port = serve("slowapp:Slow")
    result = run("call", f"127.0.0.1:{port}", "point", cwd=app_dir)
    one_line_error(result, "slowapp.Point", "--import", status=1)
    result = run("call", f"127.0.0.1:{port}", "point", "--import", "slowapp", "--import", "json",
                 cwd=app_dir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Point(3, 4)\n"


def test_user_logs_in_with_the_password_from_the_environment(serve, clean_env):
    _, port = serve("slowapp:portal")
    result = run("call", f"127.0.0.1:{port}", "whoami", "--user", "alice",
                 env={**clean_env, "PBGREEN_PASSWORD": "s3cret"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == "'alice'\n"


def test_user_is_asked_for_the_password_on_a_terminal(serve, clean_env):
    _, port = serve("slowapp:portal")
    argv = [sys.executable, "-m", "pbgreen", "call", f"127.0.0.1:{port}", "whoami", "--user",
            "alice"]
    pid, terminal = pty.fork()
    if pid == 0:  # the child: pbgreen call on a terminal of its own
        try:
            os.execve(sys.executable, argv, clean_env)
        finally:
            os._exit(127)
    deadline = time.monotonic() + 20
    seen = b""
    status = None

    def read_until(done) -> None:
        nonlocal seen
        while not done(seen):
            left = deadline - time.monotonic()
            assert left > 0, f"pbgreen call on a terminal printed only {seen!r}"
            ready, _, _ = select.select([terminal], [], [], left)
            if ready:
                try:
                    chunk = os.read(terminal, 4096)
                except OSError:  # EIO: the child closed the terminal
                    chunk = b""
                if not chunk:
                    return
                seen += chunk
    try:
        read_until(lambda text: b"password for alice" in text)
        os.write(terminal, b"s3cret\n")
        read_until(lambda text: False)  # to the end
        while status is None and time.monotonic() < deadline:
            waited, code = os.waitpid(pid, os.WNOHANG)
            if waited:
                status = os.waitstatus_to_exitcode(code)
            else:
                time.sleep(0.01)
    finally:
        if status is None:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        os.close(terminal)
    assert status == 0, seen
    assert b"'alice'" in seen
    assert b"s3cret" not in seen  # no echo


def test_log_level(serve):
    server, port = serve("slowapp:Slow", "--log-level", "warning")
    assert run("call", f"127.0.0.1:{port}", "fail").returncode == 1
    assert server.wait_for_text("ERROR pbgreen: Peer Will Receive PB Traceback", stream="stderr",
                                timeout=10), server.stderr
    server.signal(signal.SIGTERM)
    assert server.wait(15) == 0
    assert " INFO " not in server.stderr, server.stderr  # the stop is logged at INFO


def test_max_connections_option(serve):
    _, port = serve("shopapp:shop", "--max-connections", "5")
    result = run("call", f"127.0.0.1:{port}", "echo", "1")
    assert (result.returncode, result.stdout) == (0, "[1]\n"), result.stderr


def test_backlog_option(serve):
    """--backlog goes to PBServer(backlog=...)."""
    _, port = serve("shopapp:shop", "--backlog", "2048")
    result = run("call", f"127.0.0.1:{port}", "echo", "1")
    assert (result.returncode, result.stdout) == (0, "[1]\n"), result.stderr


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback")
def test_ipv6_address(serve):
    process, port = serve("shopapp:shop", "--host", "::1")
    assert f"on [::1]:{port}" in process.stdout
    result = run("call", f"[::1]:{port}", "echo", "6")
    assert (result.returncode, result.stdout) == (0, "[6]\n"), result.stderr


def test_serve_explains_a_bad_target(app_dir):
    result = run("serve", "shopapp:nothing", "--port", "0", cwd=app_dir)
    assert result.returncode == 2
    assert "has no attribute 'nothing'" in result.stderr
    result = run("serve", "shopapp", "--port", "0", cwd=app_dir)
    assert result.returncode == 2 and "MODULE:OBJECT" in result.stderr


def test_help_explains_each_command():
    for command in ("serve", "call"):
        result = run(command, "--help")
        assert result.returncode == 0
        assert "usage: pbgreen " + command in result.stdout


def test_call_a_twisted_server():
    with start([sys.executable, str(TWISTED_SERVER)], timeout=20, grace=10,
               stderr=subprocess.DEVNULL) as server:
        result = run("call", f"127.0.0.1:{server.port}", "add", "1", "2", "-k", "c=3")
        assert result.returncode == 0, result.stderr
        assert result.stdout == "6\n"


def test_console_script_is_installed():
    script = Path(sys.executable).parent / "pbgreen"
    assert script.exists()
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30,
                            env={**os.environ})
    assert result.returncode == 0 and "serve" in result.stdout
