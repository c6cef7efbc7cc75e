"""Testing helpers for pbgreen users.

* ``pbgreen.testing.plugin`` — the pytest plugin (fixtures ``pb_server``,
  ``pb_client``, ``pb_root``, ``pb_leak_check``), registered through the
  ``pytest11`` entry point. Its names are also reachable from here.
* ``pbgreen.testing.pump`` — two sans-I/O protocol objects wired back to
  back, for testing PB logic with no sockets and no gevent.
* ``pbgreen.testing.processes`` — start a server program, wait for its
  ready line, stop it for sure (benchmarks, demos, tests).
* ``pbgreen.testing.haproxy`` — a real HAProxy in front of PB servers, with
  the configuration docs/deploying.md shows (tests, benchmarks).

Importing this package imports neither gevent nor pytest: the plugin's
names are loaded on first use.
"""

from __future__ import annotations

from typing import Any

_PLUGIN_NAMES = frozenset({"pb_server", "pb_client", "pb_root", "pb_root_object",
                           "pb_leak_check", "leftovers", "snapshot"})


def __getattr__(name: str) -> Any:
    if name not in _PLUGIN_NAMES:
        raise AttributeError(f"module 'pbgreen.testing' has no attribute {name!r}")
    from . import plugin

    return getattr(plugin, name)
