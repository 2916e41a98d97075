"""Every shell block of the quickstart and the how-to guides, run as a reader runs them: in a
fresh directory holding a copy of ``examples/`` (what a clone gives them), with this
environment's ``python`` first on ``PATH`` (the activated venv).

Each block says, in the comment on the line before it, whether it is run
(``<!-- shell: run -->``) or why not (``<!-- shell: skip REASON -->``). Blocks of one page run
in order in one directory. A server command (``python -m orchestro run``, ``prometheus``,
``etcd``) is started in the background and stopped when the page is done; any other command
is retried for up to 60 s until it exits with 0 and prints what the block shows after it
(its lines in order; ``...`` stands for anything; JSON lines compared without spaces).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .blocks import ROOT, Block, blocks

PAGES = [
    "docs/quickstart.md",
    *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "how-to").glob("*.md")),
]
SHELLS = ("bash", "console", "sh", "shell")
SERVERS = re.compile(r"^(\w+=\S+ )*(python -m orchestro run|prometheus|etcd) ")
RETRY_FOR = 60.0

pytestmark = pytest.mark.slow


def shell_blocks(page: str) -> list[Block]:
    return [b for b in blocks(ROOT / page) if b.language in SHELLS]


@pytest.mark.parametrize("page", PAGES)
def test_every_shell_block_says_whether_it_is_run(page: str) -> None:
    unmarked = [b.where() for b in shell_blocks(page) if b.shell is None]
    assert not unmarked, f"{unmarked}: add <!-- shell: run --> or <!-- shell: skip REASON -->"
    reasonless = [b.where() for b in shell_blocks(page) if b.shell == ("skip", "")]
    assert not reasonless, f"{reasonless}: say why the block is not run"


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """(command, expected output lines) of a block: `$ ` lines in a console block, each
    line (joined at a trailing backslash) in a bash block; comments dropped."""
    lines = block.text.splitlines()
    found: list[tuple[str, list[str]]] = []
    console = block.language == "console"
    i = 0
    while i < len(lines):
        line = lines[i]
        if console and not line.startswith("$ "):
            if found:
                found[-1][1].append(line)
            i += 1
            continue
        command = line[2:] if console else line
        while command.endswith("\\") and i + 1 < len(lines):
            i += 1
            command = command[:-1] + " " + lines[i].strip()
        command = re.sub(r"\s+#[^'\"]*$", "", command).strip()
        if command and not command.startswith("#"):
            found.append((command, []))
        i += 1
    return found


def matches(expected: list[str], output: str) -> bool:
    """Whether the expected lines appear in ``output``'s lines, in order."""
    actual = output.splitlines()
    position = 0
    for want in expected:
        if not want.strip() or want.strip() == "...":
            continue
        pattern = _pattern(want)
        while position < len(actual) and not pattern.fullmatch(_squash(actual[position])):
            position += 1
        if position == len(actual):
            return False
        position += 1
    return True


def _squash(line: str) -> str:
    line = line.strip()
    return re.sub(r"\s+", "", line) if line[:1] in "{[" else line


def _pattern(line: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in _squash(line).split("...")))


def _ports(command: str) -> list[int]:
    words = shlex.split(command)
    if "orchestro" in words and "run" in words:
        target = ROOT / words[words.index("run") + 1]
        return [int(p) for p in re.findall(r"port=(\d+)", target.read_text())]
    return [int(p) for p in re.findall(r"(?:127\.0\.0\.1|localhost):(\d+)", command)]


def _busy(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Reader:
    """A reader's terminal(s): a fresh directory, the servers they started."""

    def __init__(self, home: Path) -> None:
        self.home = home
        shutil.copytree(ROOT / "examples", home / "examples")
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
            "ORCHESTRO_STATE_DIR": str(home / "state"),
            "TMPDIR": str(home / "tmp"),  # `mktemp -d` of the pages: cleaned up with the test
        }
        (home / "tmp").mkdir()
        self.env.pop("ORCHESTRO_REGISTRY", None)
        self.servers: list[subprocess.Popen[bytes]] = []

    def start(self, command: str) -> None:
        busy = [p for p in _ports(command) if _busy(p)]
        if busy:
            pytest.skip(f"port {busy[0]} is in use on this machine, and `{command}` needs it")
        log = (self.home / f"server-{len(self.servers)}.log").open("wb")
        self.servers.append(
            subprocess.Popen(
                ["bash", "-c", command],  # its own process group: stopped whole
                cwd=self.home,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def run(self, command: str, expected: list[str]) -> None:
        out = self.home / "command.out"
        deadline = time.monotonic() + RETRY_FOR
        while True:
            with out.open("wb") as handle:
                code = subprocess.run(
                    ["bash", "-c", command],
                    cwd=self.home,
                    env=self.env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    timeout=RETRY_FOR,
                ).returncode
            output = out.read_text(errors="replace")
            if code == 0 and matches(expected, output):
                return
            for server in self.servers:
                if server.poll() is not None:
                    raise AssertionError(f"a server of the page exited: {self.logs()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"`{command}` exited {code} with:\n{output}\nexpected:\n"
                    + "\n".join(expected)
                    + f"\nservers: {self.logs()}"
                )
            time.sleep(0.5)

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-2000:] for p in self.home.glob("server-*.log")
        )

    def stop(self) -> None:
        for server in self.servers:
            if server.poll() is None:
                os.killpg(server.pid, signal.SIGTERM)
        for server in self.servers:
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait()


@pytest.fixture
def reader(tmp_path: Path) -> Iterator[Reader]:
    terminal = Reader(tmp_path)
    yield terminal
    terminal.stop()


RUN_PAGES = [
    page for page in PAGES if any(b.shell and b.shell[0] == "run" for b in shell_blocks(page))
]


@pytest.mark.parametrize("page", RUN_PAGES)
def test_the_shell_blocks_run(page: str, reader: Reader) -> None:
    for block in shell_blocks(page):
        if block.shell is None or block.shell[0] != "run":
            continue
        for command, expected in commands(block):
            if SERVERS.match(command):
                reader.start(command)
            else:
                reader.run(command, expected)


def test_expected_output_is_matched_line_by_line() -> None:
    output = 'HTTP/1.1 201 Created\nLocation: /orders/1\n\n{"id":1, "x": [1, 2]}\n'
    assert matches(["HTTP/1.1 201 Created", "...", '{"id": 1, "x": [1,2]}'], output)
    assert matches(["Location: /orders/..."], output)
    assert not matches(['{"id": 2, ...}'], output)
    assert not matches(["Location: /orders/1", "HTTP/1.1 201 Created"], output)  # in order
