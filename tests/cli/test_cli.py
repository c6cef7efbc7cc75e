"""``pbgreen serve`` and ``pbgreen call`` as real processes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pbgreen.testing.processes import start

HERE = Path(__file__).resolve().parent
TWISTED_SERVER = HERE.parent / "interop" / "twisted_server.py"

APP = textwrap.dedent('''
    import pbgreen as pb

    class Shop(pb.Root):
        def __init__(self):
            self.items = {}

        def remote_add(self, name, price=0):
            self.items[name] = price
            return sorted(self.items.items())

        def remote_echo(self, *args):
            return list(args)

        def remote_fail(self):
            raise ValueError("out of stock")

    shop = Shop()

    def make_shop():
        return Shop()
''')


def run(*args, cwd=None, timeout=30):
    return subprocess.run([sys.executable, "-m", "pbgreen", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


@pytest.fixture
def serve(tmp_path):
    """serve(target, *extra) -> (Child, port): `pbgreen serve` on port 0, stopped afterwards."""
    (tmp_path / "shopapp.py").write_text(APP)
    started = []

    def start_one(target, *extra):
        process = start([sys.executable, "-m", "pbgreen", "serve", target, "--port", "0", *extra],
                        ready=rf"^pbgreen: serving {re.escape(target)} on 127\.0\.0\.1:(\d+)\b",
                        timeout=20, cwd=tmp_path)
        started.append(process)
        assert process.stdout.startswith("pbgreen: serving "), process.stdout  # its first line
        return process, process.port

    yield start_one
    for process in started:
        process.stop(timeout=10)


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


def test_serve_stops_cleanly_on_sigterm(serve):
    process, port = serve("shopapp:shop")
    process.signal(signal.SIGTERM)
    assert process.wait(10) == 0


def test_serve_explains_a_bad_target(tmp_path):
    (tmp_path / "shopapp.py").write_text(APP)
    result = run("serve", "shopapp:nothing", "--port", "0", cwd=tmp_path)
    assert result.returncode == 2
    assert "has no attribute 'nothing'" in result.stderr
    result = run("serve", "shopapp", "--port", "0", cwd=tmp_path)
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
