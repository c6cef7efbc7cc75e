"""Everyday mistakes on the command line: one line on stderr naming the problem, status 2.

Each test runs ``python -m pbgreen`` as a real process and checks the whole
contract (``one_line_error``): the exit status, nothing on stdout, exactly
one line on stderr, no traceback, and the file, address or module named.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time

import pytest

from pbgreen.testing.processes import Child


def free_port() -> int:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """cert.pem + key.pem, other-key.pem (not cert.pem's), locked-key.pem (a passphrase)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    folder = tmp_path_factory.mktemp("tls")

    def make(key: str, cert: str, *extra: str) -> None:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-keyout", str(folder / key), "-out",
                        str(folder / cert), "-days", "1", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", *extra],
                       check=True, capture_output=True, timeout=30)
    make("key.pem", "cert.pem", "-nodes")
    make("other-key.pem", "other-cert.pem", "-nodes")
    make("locked-key.pem", "locked-cert.pem", "-passout", "pass:secret")
    (folder / "notes.txt").write_text("not a certificate\n")
    return folder


# --- pbgreen serve ------------------------------------------------------------------


def test_serve_port_in_use(app_dir, run_cli, one_line_error):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "shopapp:shop", "--port", str(port), cwd=app_dir)
    line = one_line_error(result, f"127.0.0.1:{port}")
    assert "in use" in line


def test_serve_bad_host(app_dir, run_cli, one_line_error):
    result = run_cli("serve", "shopapp:shop", "--port", "0", "--host", "no-such-host.invalid",
                     cwd=app_dir)
    one_line_error(result, "no-such-host.invalid", "unknown host")


@pytest.mark.parametrize("cert, key, named", [
    ("missing-cert.pem", "key.pem", "missing-cert.pem"),
    ("cert.pem", "missing-key.pem", "missing-key.pem"),
    (".", "key.pem", "'.'"),                          # a directory
    ("notes.txt", "key.pem", "notes.txt"),            # no certificate in it
    ("cert.pem", "notes.txt", "notes.txt"),           # no key in it
    ("cert.pem", "other-key.pem", "other-key.pem"),   # another certificate's key
    ("locked-cert.pem", "locked-key.pem", "locked-key.pem"),  # needs a passphrase
])
def test_serve_tls_file_problems_name_the_file(app_dir, tls_files, run_cli, one_line_error,
                                               cert, key, named):
    result = run_cli("serve", "shopapp:shop", "--port", "0", "--tls-cert", cert, "--tls-key", key,
                     cwd=app_dir if cert == "." else tls_files, timeout=20)
    one_line_error(result, named)


def test_serve_tls_cert_without_key(app_dir, run_cli, one_line_error):
    result = run_cli("serve", "shopapp:shop", "--port", "0", "--tls-cert", "cert.pem",
                     cwd=app_dir)
    one_line_error(result, "--tls-cert and --tls-key go together")


@pytest.mark.parametrize("module_text, named", [
    (None, "no module named 'brokenapp'"),
    ("x = 1 / 0\n", "ZeroDivisionError"),
    ("def f(:\n", "SyntaxError"),
    ("import no_such_dependency_xyz\n", "no_such_dependency_xyz"),
])
def test_serve_a_module_that_cannot_be_imported(app_dir, run_cli, one_line_error, module_text,
                                                named):
    if module_text is not None:
        (app_dir / "brokenapp.py").write_text(module_text)
    result = run_cli("serve", "brokenapp:Root", "--port", "0", cwd=app_dir)
    line = one_line_error(result, "brokenapp", named)
    if module_text is not None:
        assert "brokenapp.py, line 1" in line


def test_serve_an_object_that_is_not_a_root(app_dir, run_cli, one_line_error):
    (app_dir / "notroot.py").write_text("answer = 42\n\ndef make():\n    return 'text'\n\n"
                                        "def broken():\n    raise RuntimeError('no db')\n")
    one_line_error(run_cli("serve", "notroot:answer", "--port", "0", cwd=app_dir), "notroot:answer")
    one_line_error(run_cli("serve", "notroot:make", "--port", "0", cwd=app_dir), "notroot:make")
    one_line_error(run_cli("serve", "notroot:broken", "--port", "0", cwd=app_dir),
                   "notroot:broken()", "RuntimeError: no db", "notroot.py, line 7")
    one_line_error(run_cli("serve", "notroot:nothing", "--port", "0", cwd=app_dir),
                   "has no attribute 'nothing'")


@pytest.mark.parametrize("option, value, named", [
    ("--port", "http", "'http'"),
    ("--port", "70000", "'70000'"),
    ("--port", "-1", "'-1'"),
    ("--graceful-timeout", "-1", "--graceful-timeout"),
    ("--graceful-timeout", "soon", "--graceful-timeout"),
    ("--log-level", "LOUD", "--log-level"),
    ("--backlog", "0", "--backlog"),
    ("--max-connections", "many", "--max-connections"),
])
def test_serve_bad_option_values(app_dir, run_cli, one_line_error, option, value, named):
    one_line_error(run_cli("serve", "shopapp:shop", option, value, cwd=app_dir), named, value)


# --- pbgreen call ---------------------------------------------------------------------


@pytest.mark.parametrize("address, hint", [
    ("8810", "did you mean 127.0.0.1:8810?"),
    ("localhost:http", "'http' is not a port number"),
    ("localhost:0", "'0' is not a port number"),
    ("::1:8810", "[::1]:8810"),
    ("[::1", "[::1]:8787"),
])
def test_call_refuses_an_address_that_is_not_host_port(run_cli, one_line_error, address, hint):
    one_line_error(run_cli("call", address, "stock"), repr(address), hint)


@pytest.mark.parametrize("value", ["-1", "0", "soon", "nan"])
def test_call_refuses_a_bad_timeout(run_cli, one_line_error, value):
    one_line_error(run_cli("call", "127.0.0.1:8810", "stock", "--timeout", value),
                   "--timeout", repr(value))


def test_call_unreachable_server(run_cli, one_line_error):
    port = free_port()
    one_line_error(run_cli("call", f"127.0.0.1:{port}", "stock", "--timeout", "5"),
                   f"127.0.0.1:{port}", "refused")


def test_call_unknown_host(run_cli, one_line_error):
    one_line_error(run_cli("call", "no-such-host.invalid:8810", "stock", "--timeout", "5"),
                   "no-such-host.invalid:8810", "unknown host")


def test_call_something_that_never_speaks_pb(run_cli, one_line_error):
    with socket.socket() as silent:  # the kernel accepts; nobody ever answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        began = time.monotonic()
        result = run_cli("call", f"127.0.0.1:{port}", "stock", "--timeout", "0.5")
    assert time.monotonic() - began < 10
    one_line_error(result, f"127.0.0.1:{port}", "0.5 s")


def test_call_an_import_that_fails(app_dir, run_cli, one_line_error):
    one_line_error(run_cli("call", "127.0.0.1:8810", "stock", "--import", "no_such_module_xyz",
                           cwd=app_dir), "no_such_module_xyz")
    (app_dir / "badimport.py").write_text("raise RuntimeError('half written')\n")
    one_line_error(run_cli("call", "127.0.0.1:8810", "stock", "--import", "badimport",
                           cwd=app_dir), "badimport", "half written", "badimport.py, line 1")


def test_call_tls_ca_file_problems(app_dir, run_cli, one_line_error):
    one_line_error(run_cli("call", "127.0.0.1:8810", "stock", "--tls-ca", "missing-ca.pem",
                           cwd=app_dir), "missing-ca.pem")
    one_line_error(run_cli("call", "127.0.0.1:8810", "stock", "--tls-ca", "shopapp.py",
                           cwd=app_dir), "shopapp.py", "no PEM certificate")


def test_call_bad_keyword_argument(run_cli, one_line_error):
    one_line_error(run_cli("call", "127.0.0.1:8810", "stock", "-k", "count"), "'count'",
                   "NAME=VALUE")


def test_call_user_without_a_password(run_cli, one_line_error, clean_env):
    # stdin is not a terminal and PBGREEN_PASSWORD is unset: nothing to ask, nothing to use
    one_line_error(run_cli("call", "127.0.0.1:8810", "whoami", "--user", "alice", env=clean_env),
                   "--user alice", "PBGREEN_PASSWORD")


def test_call_user_against_a_server_without_a_portal(serve, run_cli, one_line_error, clean_env):
    _, port = serve("slowapp:Slow")
    env = {**clean_env, "PBGREEN_PASSWORD": "s3cret"}
    one_line_error(run_cli("call", f"127.0.0.1:{port}", "whoami", "--user", "alice", env=env),
                   f"127.0.0.1:{port}", "drop --user")


def test_call_wrong_password_or_user(serve, run_cli, one_line_error, clean_env):
    _, port = serve("slowapp:portal")
    for user, password in [("alice", "wrong"), ("mallory", "s3cret")]:
        env = {**clean_env, "PBGREEN_PASSWORD": password}
        result = run_cli("call", f"127.0.0.1:{port}", "whoami", "--user", user, env=env)
        one_line_error(result, f"login as '{user}' at 127.0.0.1:{port} refused")


def test_call_connection_lost_during_the_call(serve, one_line_error):
    server, port = serve("slowapp:Slow")
    with Child([sys.executable, "-m", "pbgreen", "call", f"127.0.0.1:{port}", "work", "60",
                "--timeout", "30"]) as caller:
        server.expect("^WORK STARTED$", timeout=20)
        server.kill()  # the server dies while the call waits for its answer
        assert caller.wait(20) is not None, "pbgreen call did not notice the server died"
        result = subprocess.CompletedProcess(caller.argv, caller.returncode, caller.stdout,
                                             caller.stderr)
    one_line_error(result, f"connection to 127.0.0.1:{port} lost while calling work")


def test_call_a_server_at_capacity(serve, one_line_error):
    server, port = serve("slowapp:Slow", "--max-connections", "1", "--graceful-timeout", "0")
    with Child([sys.executable, "-m", "pbgreen", "call", f"127.0.0.1:{port}", "work", "60",
                "--timeout", "60"]):  # holds the one connection
        server.expect("^WORK STARTED$", timeout=20)
        result = subprocess.run([sys.executable, "-m", "pbgreen", "call", f"127.0.0.1:{port}",
                                 "work", "0", "--timeout", "5"], capture_output=True, text=True,
                                timeout=30)
    one_line_error(result, f"127.0.0.1:{port}", "server at capacity")


def test_call_bad_log_level(run_cli, one_line_error):
    one_line_error(run_cli("call", "127.0.0.1:8810", "stock", "--log-level", "chatty"),
                   "--log-level", "'chatty'")


def test_call_a_tls_server_it_does_not_trust(serve, tls_files, run_cli, one_line_error):
    _, port = serve("shopapp:shop", "--tls-cert", str(tls_files / "cert.pem"), "--tls-key",
                    str(tls_files / "key.pem"))
    result = run_cli("call", f"localhost:{port}", "echo", "1", "--tls-ca",
                     str(tls_files / "cert.pem"))
    assert (result.returncode, result.stdout) == (0, "[1]\n"), result.stderr  # trusted: fine
    result = run_cli("call", f"localhost:{port}", "echo", "1", "--tls-ca",
                     str(tls_files / "other-cert.pem"))
    one_line_error(result, f"localhost:{port}", "not trusted", "--tls-ca")
