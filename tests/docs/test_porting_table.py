"""docs/porting.md's table "The whole surface, name by name" stays honest.

The table has one row per public name of the Twisted modules below. A
module's public names are found the way the table's introduction says:
``dir(module)`` without the names that start with ``_``, keeping only names
the module's own source defines at top level (a ``class``, ``def`` or an
assignment), so names it merely imports are left to the module that defines
them. Twisted is imported in a child process, so nothing of it is loaded
into the test process.

The checks:

* every such name has a row, and every row names such a name, once;
* no row is blank, each says ``provided as `pbgreen...``` or ``not
  provided``;
* every ``pbgreen.…`` name in backticks anywhere in the table imports (a
  module, then attributes); rows for names other branches are still building
  fail here until those branches are merged;
* a "provided" row names, in its last column, tests that exist
  (``path::test_name``), or says ``see tests (pending merge)``.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PORTING = ROOT / "docs" / "porting.md"
HEADING = "## The whole surface, name by name"

# The short prefix each row uses for a Twisted module.
MODULES = {
    "pb": "twisted.spread.pb",
    "flavors": "twisted.spread.flavors",
    "jelly": "twisted.spread.jelly",
    "banana": "twisted.spread.banana",
    "util": "twisted.spread.util",
    "publish": "twisted.spread.publish",
    "portal": "twisted.cred.portal",
    "checkers": "twisted.cred.checkers",
    "credentials": "twisted.cred.credentials",
    "error": "twisted.cred.error",
}

ENUMERATE = r"""
import ast, importlib, inspect, json, sys

def defined_here(module):
    names = set()
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                names.update(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names

found = {}
for short, dotted in json.loads(sys.argv[1]).items():
    module = importlib.import_module(dotted)
    own = defined_here(module)
    found[short] = sorted(n for n in dir(module) if not n.startswith("_") and n in own)
print(json.dumps(found))
"""

ROW_RE = re.compile(r"^\|(.*)\|\s*$")
TEST_RE = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
PBGREEN_RE = re.compile(r"`(pbgreen(?:\.\w+)+)")
PENDING = "see tests (pending merge)"


def twisted_names() -> set[str]:
    out = subprocess.run([sys.executable, "-c", ENUMERATE, json.dumps(MODULES)],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    return {f"{short}.{name}" for short, names in json.loads(out).items() for name in names}


def table_rows() -> list[list[str]]:
    text = PORTING.read_text()
    assert HEADING in text, f"{PORTING} has no section {HEADING!r}"
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        match = ROW_RE.match(line.strip())
        if match:
            rows.append([cell.strip() for cell in match.group(1).split("|")])
    body = [r for r in rows if not all(set(c) <= set("-: ") for c in r)]
    assert body and body[0][0] == "Twisted", "the table starts with a header row"
    return body[1:]


def resolve(dotted: str) -> object:
    """Import the longest module prefix of ``dotted``, then follow attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


ROWS = table_rows()


def test_every_twisted_name_has_exactly_one_row():
    listed = [row[0].strip("`") for row in ROWS]
    duplicates = sorted({n for n in listed if listed.count(n) > 1})
    assert not duplicates, f"listed more than once: {duplicates}"
    expected = twisted_names()
    assert not expected - set(listed), f"missing from the table: {sorted(expected - set(listed))}"
    assert not set(listed) - expected, f"not Twisted names: {sorted(set(listed) - expected)}"


@pytest.mark.parametrize("row", ROWS, ids=[row[0].strip("`") for row in ROWS])
def test_row(row):
    assert len(row) == 3 and all(row), f"a row needs three filled cells: {row}"
    name, status, shown_by = row
    assert status.startswith(("provided as `pbgreen.", "not provided")), status
    for dotted in PBGREEN_RE.findall(status):
        try:
            resolve(dotted)
        except (ImportError, AttributeError) as exc:
            pytest.fail(f"{name}: `{dotted}` does not import from pbgreen: {exc}")
    if status.startswith("provided"):
        tests = TEST_RE.findall(shown_by)
        assert tests or shown_by == PENDING, (
            f"{name}: say which test shows it (`tests/...py::test_name`) or {PENDING!r}")
        for path, test in tests:
            source = ROOT / path
            assert source.is_file(), f"{name}: no file {path}"
            assert re.search(rf"^\s*def {test}\(", source.read_text(), re.M), (
                f"{name}: no test {test} in {path}")
    else:
        assert shown_by == "—", f"{name}: a name not provided has no test ({shown_by})"
