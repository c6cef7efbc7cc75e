"""The core is sans-I/O: codec, jelly, flavors, protocol, cred and reference
import and work with gevent and greenlet unavailable, and never touch a socket.
"""

import socket
import subprocess
import sys
import textwrap

import pytest

CORE_MODULES = ["errors", "banana", "_security", "_unjelly", "jelly", "flavors", "_pycodec", "plaincodec",
                "events", "_refs", "_failure", "protocol", "dispatch", "cred", "reference", "proxyproto",
                "testing",
                "testing.pump", "testing.processes"]

BLOCKED_IMPORT = textwrap.dedent(
    """
    import importlib, sys
    # None in sys.modules makes any import of these raise ImportError.
    for name in ("gevent", "greenlet"):
        sys.modules[name] = None
    for name in sys.argv[1:]:
        importlib.import_module("pbgreen." + name)
    loaded = sorted(
        n for n, m in sys.modules.items()
        if n.split(".")[0] in ("gevent", "greenlet") and m is not None
    )
    if loaded:
        raise SystemExit("gevent/greenlet got imported: %r" % loaded)
    print("ok")
    """
)


def run_blocked(*modules):
    return subprocess.run(
        [sys.executable, "-c", BLOCKED_IMPORT, *modules],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_without_gevent(module):
    result = run_blocked(module)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_all_core_modules_together_without_gevent():
    result = run_blocked(*CORE_MODULES)
    assert result.returncode == 0, result.stderr


def test_codec_never_touches_a_socket(monkeypatch):
    from pbgreen.banana import Decoder, encode
    from pbgreen.jelly import jelly, unjelly

    def no_sockets(*args, **kwargs):
        raise AssertionError("the codec opened a socket")

    monkeypatch.setattr(socket, "socket", no_sockets)
    monkeypatch.setattr(socket, "create_connection", no_sockets)
    value = {"a": [1, 2.5, b"x", None, True, ("t",)], 3: {frozenset([4])}}
    data = encode(jelly(value))
    (sexp,) = Decoder(vocab=True).feed(data)
    assert unjelly(sexp) == value
