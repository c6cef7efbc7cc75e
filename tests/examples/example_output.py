"""What the example tests share: timeouts, the ready line, and output checks.

Imported by name (pytest puts this directory on sys.path for its tests and
conftest.py).
"""

import re

STARTUP_TIMEOUT = 30.0
CLIENT_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
READY = r"^listening on (\d+)$"


def lines(text):
    return [line.strip() for line in text.splitlines() if line.strip()]


def assert_lines(text, patterns, what="output"):
    got = lines(text)
    ok = len(got) == len(patterns) and all(
        re.fullmatch(p, line) for p, line in zip(patterns, got)
    )
    assert ok, (
        f"{what} does not match\n--- got:\n" + "\n".join(got)
        + "\n--- expected (regex):\n" + "\n".join(patterns)
    )
    return got


def client_stdout(result):
    assert result.returncode == 0, (
        f"client exited with {result.returncode}\n"
        f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    # An example that works prints nothing else: no warnings, no tracebacks.
    assert result.stderr == "", result.stderr
    return result.stdout
