"""Importing the gevent driver settles the heap: large message buffers reuse its memory."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

PROGRAM = """
import resource, sys
import gevent, pbgreen.protocol
if sys.argv[1] == "driver":
    import pbgreen.connection  # the gevent driver settles the heap when it is imported
block = bytearray(300_000)  # a mapped block smaller than a message is the first one freed
del block
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):  # a 600 KB message and a copy of it, as a receive and a reply make
    message = b"x" * 600_000
    reply = message + b"y"
    del message, reply
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc",
                                reason="the mmap threshold it adjusts is glibc's")


def _page_faults(mode: str) -> int:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    done = subprocess.run([sys.executable, "-c", PROGRAM, mode], env=env, check=True,
                          capture_output=True, text=True, timeout=60)
    return int(done.stdout)


@glibc_only
def test_settled_heap_keeps_message_buffers_for_reuse():
    # 50 rounds of 1.2 MB: unsettled, the heap grows and is trimmed each round
    # (about 300 page faults a round); settled, the memory is faulted in once.
    assert _page_faults("core only") > 50 * 100
    assert _page_faults("driver") < 50 * 10
