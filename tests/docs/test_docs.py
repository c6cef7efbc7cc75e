"""The documentation: the MkDocs site builds cleanly, and its examples run.

Conventions (explained for writers in docs/writing-docs.md):

* A fenced ``python`` block whose first line is ``# example: NAME`` is a
  complete program. It runs as a script in a fresh directory and must exit 0
  with nothing on stderr.
* ``# example: NAME/server`` and ``# example: NAME/ROLE`` blocks form a group
  run together: the server starts first with ``0`` as its only argument and
  must print ``listening on PORT``; then every other role runs, in the order
  the blocks appear, with PORT as its only argument. A role that ends in
  ``.py`` is a module written next to the scripts (``test_*.py`` ones are run
  with pytest, as a step of their own). The server is stopped at the end.
* The fenced ``text`` block that comes next after an example block (no other
  fenced block and no heading in between) is that program's expected stdout,
  compared line by line. ``...`` stands for any text within a line, and a
  line of just ``...`` for any number of lines.
* A fenced ``console`` block that starts with ``# example: NAME/ROLE`` takes
  part in a group too. Each ``$ COMMAND`` line is run (``pbgreen`` and
  ``python`` mean this interpreter's), and the lines under it are its
  expected output, stdout and stderr together; ``$ echo $?`` shows the exit
  status of the command before it, which must otherwise be 0. In console
  blocks, the port number 8800 stands for the group server's real port. A
  console ``server`` block holds one command; its port is read from its
  ``listening on PORT`` or ``... on HOST:PORT`` line.
* Every other ``python`` block must at least be valid Python.

Every process has a deadline; none is left running; nothing sleeps for a
fixed time (the server's port is read from its output as soon as it is
printed).
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pbgreen.testing.processes import Child, ChildError, start

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

BUILD_TIMEOUT = 120.0
STARTUP_TIMEOUT = 20.0   # a server has this long to print `listening on PORT`
STEP_TIMEOUT = 30.0      # each client, program or pytest run
STOP_TIMEOUT = 10.0

EXAMPLE_RE = re.compile(r"#\s*example:\s*(\S+)\s*$")
LISTENING_RE = re.compile(r"(?:listening on |\bon [\w.\-]+:)(\d+)\b")
EXAMPLE_PORT = "8800"   # in console examples, stands for the server's real port
FENCE_RE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`]*)$")
HEADING_RE = re.compile(r"^#{1,6} ")


# ----------------------------------------------------------------------------- parsing


@dataclass
class Block:
    path: Path
    line: int          # 1-based line of the opening fence
    lang: str
    text: str
    indent: str = ""   # of the fence (Python-Markdown renders indented fences as text)

    @property
    def where(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path
        return f"{path}:{self.line}"


@dataclass
class Program:
    block: Block
    role: str | None                 # None: a standalone program
    expected: Block | None = None    # the text block after it


@dataclass
class Group:
    name: str
    programs: list[Program] = field(default_factory=list)

    @property
    def where(self) -> str:
        return self.programs[0].block.where


def parse_blocks(path: Path, text: str | None = None) -> list[Block | str]:
    """Fenced blocks of a Markdown file, with the headings between them (as str)."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    items: list[Block | str] = []
    i = 0
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        if not m:
            if HEADING_RE.match(lines[i]):
                items.append(lines[i])
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"].strip()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines):
            closing = lines[i].strip()
            if closing.startswith(fence[0] * len(fence)) and set(closing) == {fence[0]}:
                break
            line = lines[i]
            body.append(line[len(indent):] if line.startswith(indent) else line.lstrip())
            i += 1
        else:
            raise AssertionError(f"{path}:{start + 1}: fence never closed")
        i += 1
        lang = info.split()[0].lower() if info else ""
        items.append(Block(path, start + 1, lang, "\n".join(body) + "\n", indent))
    return items


def collect(paths: list[tuple[Path, str | None]]) -> tuple[dict[str, Group], list[Block]]:
    """Example groups by name, and every python block."""
    groups: dict[str, Group] = {}
    python_blocks: list[Block] = []
    for path, text in paths:
        items = parse_blocks(path, text)
        pending: Program | None = None  # waiting for its expected output
        for item in items:
            if isinstance(item, str):  # a heading ends the search for an output block
                pending = None
                continue
            if pending is not None and item.lang == "text":
                pending.expected = item
                pending = None
                continue
            pending = None
            if item.lang not in ("python", "console"):
                continue
            if item.lang == "python":
                python_blocks.append(item)
            first = item.text.lstrip("\n").split("\n", 1)[0]
            m = EXAMPLE_RE.fullmatch(first.strip())
            if not m:
                if first.strip().startswith("# example"):
                    raise AssertionError(f"{item.where}: malformed example marker {first!r}")
                continue
            name, _, role = m[1].partition("/")
            program = Program(item, role or None)
            group = groups.setdefault(name, Group(name))
            group.programs.append(program)
            pending = program if item.lang == "python" else None  # console: output inline
    return groups, python_blocks


def doc_files() -> list[tuple[Path, str | None]]:
    return [(p, None) for p in sorted(DOCS.rglob("*.md"))]


def check_group(group: Group) -> None:
    """The group's shape makes sense (raises AssertionError otherwise)."""
    roles = [p.role for p in group.programs]
    if None in roles:
        assert roles == [None], (
            f"{group.where}: example {group.name!r} is a standalone program "
            f"and cannot also have roles {roles}")
    else:
        assert roles.count("server") <= 1, f"{group.where}: {group.name!r} has two servers"
        assert len(set(roles)) == len(roles), f"{group.where}: {group.name!r} repeats a role"
        steps = [r for r in roles if r != "server" and (not r.endswith(".py")
                                                       or r.startswith("test_"))]
        assert steps, f"{group.where}: {group.name!r} has nothing to run"
    for program in group.programs:
        if program.block.lang == "console":
            assert program.role is not None and not program.role.endswith(".py"), (
                f"{program.block.where}: a console example must be a server or a step of a group")
            commands = console_commands(program.block.text)
            assert commands, f"{program.block.where}: a console example without `$ ` commands"
            if program.role == "server":
                assert len(commands) == 1, f"{program.block.where}: a server runs one command"
            continue
        runs = program.role is None or program.role == "server" or not program.role.endswith(
            ".py") or program.role.startswith("test_")
        if runs and program.role != "server":
            assert program.expected is not None, (
                f"{program.block.where}: example {group.name!r} "
                f"({program.role or 'program'}) needs a ```text block with its expected output")


# ----------------------------------------------------------------------------- matching


def _line_matches(pattern: str, line: str) -> bool:
    regex = ".*".join(re.escape(part) for part in pattern.split("..."))
    return re.fullmatch(regex, line) is not None


def output_matches(expected: str, actual: str) -> bool:
    """Line-by-line match; ``...`` is a wildcard (a whole line of it: any lines)."""
    want = [line.rstrip() for line in expected.rstrip("\n").split("\n")]
    got = [line.rstrip() for line in actual.rstrip("\n").split("\n")] if actual.strip() else []
    while want and not want[-1]:
        want.pop()
    memo: dict[tuple[int, int], bool] = {}

    def match(i: int, j: int) -> bool:
        key = (i, j)
        if key not in memo:
            if i == len(want):
                result = j == len(got)
            elif want[i].strip() == "...":
                result = match(i + 1, j) or (j < len(got) and match(i, j + 1))
            else:
                result = j < len(got) and _line_matches(want[i], got[j]) and match(i + 1, j + 1)
            memo[key] = result
        return memo[key]

    return match(0, 0)


def console_commands(text: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` pairs of a console block (marker line dropped)."""
    pairs: list[tuple[str, list[str]]] = []
    for line in text.split("\n")[1:]:
        if line.startswith("$ "):
            pairs.append((line[2:].strip(), []))
        elif pairs:
            pairs[-1][1].append(line)
    return [(command, "\n".join(out).rstrip("\n") + "\n") for command, out in pairs]


def console_argv(command: str, port: int) -> list[str]:
    words = shlex.split(command.replace(EXAMPLE_PORT, str(port)))
    if words[0] == "pbgreen":
        return [sys.executable, "-m", "pbgreen", *words[1:]]
    if words[0] in ("python", "python3"):
        return [sys.executable, *words[1:]]
    return words


# ----------------------------------------------------------------------------- running


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"     # a server's `listening on` line arrives at once
    env.pop("PYTHONPATH", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def start_server(argv: list[str], cwd: Path) -> Child:
    """Start a server; its port is read from its `listening on PORT` line."""
    try:
        return start(argv, ready=LISTENING_RE, timeout=STARTUP_TIMEOUT, cwd=cwd, env=_env())
    except ChildError as exc:  # it has been stopped; the message shows what it printed
        raise AssertionError(f"the server did not print `listening on PORT`: {exc}") from None


def report(server: Child) -> str:
    return f"--- server stdout:\n{server.stdout}--- server stderr:\n{server.stderr}"


def run_step(argv: list[str], cwd: Path, merge: bool = False) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT if merge else subprocess.PIPE,
                              text=True, timeout=STEP_TIMEOUT, env=_env(),
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:  # subprocess.run has killed and reaped it
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise AssertionError(f"`{' '.join(argv)}` did not finish within {STEP_TIMEOUT} s\n"
                             f"--- stdout:\n{out}--- stderr:\n{err}") from None


def check_step(program: Program, result: subprocess.CompletedProcess, what: str,
               context: str = "", stderr_allowed: bool = False) -> None:
    where = f"{program.block.where} ({what})"
    details = (f"\n--- stdout:\n{result.stdout}--- stderr:\n{result.stderr}{context}")
    assert result.returncode == 0, f"{where} exited with {result.returncode}{details}"
    if not stderr_allowed:
        assert result.stderr == "", f"{where} wrote to stderr{details}"
    assert program.expected is not None
    assert output_matches(program.expected.text, result.stdout), (
        f"{where}: output differs from the text block at {program.expected.where}\n"
        f"--- expected:\n{program.expected.text}{details}")


def run_console(program: Program, workdir: Path, port: int, context: str) -> None:
    """Run the commands of a console block; each must print what is shown under it."""
    last: subprocess.CompletedProcess | None = None
    status_shown = True

    def check_status() -> None:
        if last is not None and last.returncode != 0 and not status_shown:
            raise AssertionError(f"{program.block.where}: `{shlex.join(last.args)}` exited with "
                                 f"{last.returncode} and no `$ echo $?` shows it\n"
                                 f"--- output:\n{last.stdout}{context}")

    for command, expected in console_commands(program.block.text):
        where = f"{program.block.where} (`$ {command}`)"
        if command == "echo $?":
            assert last is not None, f"{where}: no command before it"
            got = f"{last.returncode}\n"
            assert output_matches(expected, got), f"{where}: exit status {got.strip()}, " \
                f"expected {expected.strip()}\n--- output:\n{last.stdout}{context}"
            status_shown = True
            continue
        check_status()
        last = run_step(console_argv(command, port), workdir, merge=True)
        status_shown = False
        expected = expected.replace(EXAMPLE_PORT, str(port))
        assert output_matches(expected, last.stdout), (
            f"{where}: output differs\n--- expected:\n{expected}"
            f"--- got (stdout and stderr):\n{last.stdout}{context}")
    check_status()


def run_group(group: Group, workdir: Path) -> None:
    """Run one example group; raises AssertionError with the evidence on failure."""
    check_group(group)
    files: dict[int, Path] = {}  # by id(program)
    for program in group.programs:
        if program.block.lang != "python":
            continue
        role = program.role
        name = (f"{group.name.replace('-', '_')}.py" if role is None
                else role if role.endswith(".py") else f"{role.replace('-', '_')}.py")
        path = workdir / name
        path.write_text(program.block.text, encoding="utf-8")
        files[id(program)] = path

    if group.programs[0].role is None:
        program = group.programs[0]
        result = run_step([sys.executable, files[id(program)].name], workdir)
        check_step(program, result, "program")
        return

    server_program = next((p for p in group.programs if p.role == "server"), None)
    server = server_expected = None
    if server_program is None:
        pass
    elif server_program.block.lang == "console":
        [(command, output)] = console_commands(server_program.block.text)
        server = start_server(console_argv(command, 0), workdir)
        server_expected = output if output.strip() else None
    else:
        server = start_server([sys.executable, files[id(server_program)].name, "0"], workdir)
        server_expected = server_program.expected.text if server_program.expected else None
    try:
        port = server.port if server else 0
        if server_expected is not None:
            server_expected = server_expected.replace(EXAMPLE_PORT, str(port))
        for program in group.programs:
            role = program.role
            context = report(server) if server else ""
            if role == "server" or (role.endswith(".py") and not role.startswith("test_")):
                continue
            if program.block.lang == "console":
                run_console(program, workdir, port, context)
                continue
            path = files[id(program)]
            if role.startswith("test_"):
                argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                        "-W", "error::pytest.PytestUnraisableExceptionWarning", path.name]
                result = run_step(argv, workdir)
                check_step(program, result, "pytest", context, stderr_allowed=True)
            else:
                result = run_step([sys.executable, path.name, str(port)], workdir)
                check_step(program, result, role, context)
        if server_expected is not None:
            # The server may print after the last answer went out: wait for
            # its output to match (or the deadline) before stopping it.
            server.wait_for(lambda out: output_matches(server_expected, out),
                            timeout=STOP_TIMEOUT)
    finally:
        if server:
            server.stop(timeout=STOP_TIMEOUT)
    if server_expected is not None:
        out = server.stdout
        assert output_matches(server_expected, out), (
            f"{server_program.block.where} (server): output differs from what the docs show\n"
            f"--- expected:\n{server_expected}{report(server)}")


# ----------------------------------------------------------------------------- tests

GROUPS, PYTHON_BLOCKS = collect(doc_files())


def test_mkdocs_build_is_clean(tmp_path):
    """``mkdocs build --strict`` succeeds and prints no warning."""
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"{exc}: install the docs tools with pip install -e '.[docs]'")
    try:
        result = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
             "-d", str(tmp_path / "site")],
            cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT, env=_env())
    except subprocess.TimeoutExpired:
        pytest.fail(f"mkdocs build took more than {BUILD_TIMEOUT} s")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "WARNING" not in output, output
    site = tmp_path / "site"
    assert (site / "index.html").is_file()
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    # The API reference really was generated from the docstrings.
    for name in ("PBServer", "PBClient", "callRemote", "CopiedFailure", "pb_leak_check"):
        assert name in api, f"the API reference lacks {name}"


def test_examples_were_found():
    assert len(GROUPS) >= 20, sorted(GROUPS)
    for group in GROUPS.values():
        check_group(group)


def test_no_indented_fences():
    """MkDocs' Markdown does not see a fence inside a list item: it shows it as text."""
    for path, text in doc_files():
        for item in parse_blocks(path, text):
            if isinstance(item, Block):
                assert not item.indent, f"{item.where}: indented fenced block"


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=lambda b: b.where)
def test_python_block_is_valid_python(block):
    try:
        ast.parse(block.text)
    except SyntaxError as exc:
        pytest.fail(f"{block.where}: not valid Python: {exc}")


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_example_runs(name, tmp_path):
    run_group(GROUPS[name], tmp_path)


# ----------------------------------------------------------------------------- the checker checked

BROKEN = '''
# A page

```python
# example: hello
print("hello")
```

```text
goodbye
```

## Pair

```python
# example: pair/server
import sys
print("listening on", 1)
import time
time.sleep(60)
```

```python
# example: pair/client
import sys
sys.exit(3)
```

```text
anything
```

## Shell

```console
# example: shell/run
$ python -c "import sys; sys.exit(4)"
```

```console
# example: shell2/run
$ python -c "print('hi')"
hi
$ python -c "import sys; sys.exit(2)"
$ echo $?
3
```
'''


def test_matching_rules():
    assert output_matches("a\nb\n", "a\nb\n")
    assert not output_matches("a\nb\n", "a\nc\n")
    assert not output_matches("a\n", "a\nb\n")
    assert output_matches("got <...>\n", "got <RemoteReference b'1' at 0x7f>\n")
    assert output_matches("first\n...\nlast\n", "first\nx\ny\nlast\n")
    assert output_matches("first\n...\nlast\n", "first\nlast\n")
    assert not output_matches("first\n...\nlast\n", "first\nx\n")


def test_a_wrong_output_or_a_failing_client_fails(tmp_path):
    groups, _ = collect([(tmp_path / "broken.md", BROKEN)])
    assert groups["hello"].programs[0].expected.text == "goodbye\n"
    (tmp_path / "hello").mkdir()
    with pytest.raises(AssertionError, match="output differs"):
        run_group(groups["hello"], tmp_path / "hello")
    (tmp_path / "pair").mkdir()
    with pytest.raises(AssertionError, match="exited with 3"):
        run_group(groups["pair"], tmp_path / "pair")
    (tmp_path / "shell").mkdir()
    with pytest.raises(AssertionError, match="exited with 4 and no"):
        run_group(groups["shell"], tmp_path / "shell")
    (tmp_path / "shell2").mkdir()
    with pytest.raises(AssertionError, match="exit status 2, expected 3"):
        run_group(groups["shell2"], tmp_path / "shell2")
