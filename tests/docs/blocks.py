"""The code blocks of the Markdown docs, and the files they are copies of.

A block that shows (part of) a file the tests run is written out in the Markdown, so it reads
the same on GitHub and on the site, and says where it comes from in an HTML comment on the
line before it (invisible in both)::

    <!-- example: examples/frontend.py:9: -->      lines 9 to the end
    <!-- example: examples/shop.py:123:171 -->     lines 123 to 171
    <!-- example: tests/docs/test_mesh_page.py:fake_client -->   a section between
                                                   `# --8<-- [start:fake_client]` and `[end:...]`
    <!-- example: examples/observability/prometheus.yml -->      the whole file

``tests/docs/test_code_blocks.py`` checks that every such block equals its source. After
changing an example, rewrite the blocks from their files with::

    python -m tests.docs.blocks --write
"""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])

_FENCE = re.compile(r"^(```+)(\S*)[^\n]*$")
_EXAMPLE = re.compile(r"^<!-- example: (\S+) -->$")
_SHELL = re.compile(r"^<!-- shell: (run|skip)\b\s*(.*?)\s*-->$")
_SECTION = re.compile(r"#\s*--8<--\s*\[(start|end):(\w+)\]")


@dataclass
class Block:
    """A fenced code block: its language, its text, and the marker comment before it."""

    page: Path
    line: int  # 1-based line of the opening fence
    end: int  # 1-based line of the closing fence
    language: str
    text: str
    example: str | None  # `path[:spec]` of an `<!-- example: ... -->` comment
    shell: tuple[str, str] | None  # ("run" | "skip", reason) of a `<!-- shell: ... -->` comment

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        fence, language = match.groups()
        end = i + 1
        while end < len(lines) and lines[end].strip() != fence:
            end += 1
        before = lines[i - 1].strip() if i else ""
        example = _EXAMPLE.match(before)
        shell = _SHELL.match(before)
        found.append(
            Block(
                page=page,
                line=i + 1,
                end=end + 1,
                language=language,
                text="\n".join(lines[i + 1 : end]),
                example=example.group(1) if example else None,
                shell=(shell.group(1), shell.group(2)) if shell else None,
            )
        )
        i = end + 1
    return found


def source_of(spec: str) -> str:
    """The text an `example:` marker names (the syntax of pymdownx.snippets)."""
    path, _, rest = spec.partition(":")
    lines = (ROOT / path).read_text().splitlines()
    if not rest:
        chosen = lines
    elif re.fullmatch(r"\d*:?\d*", rest):
        start, _, end = rest.partition(":")
        chosen = lines[int(start or 1) - 1 : int(end) if end else None]
    else:
        begin = end_ = None
        for n, line in enumerate(lines):
            section = _SECTION.search(line)
            if section and section.group(2) == rest:
                if section.group(1) == "start":
                    begin = n + 1
                else:
                    end_ = n
        if begin is None or end_ is None:
            raise LookupError(f"{path} has no section {rest!r}")
        chosen = lines[begin:end_]
    while chosen and not chosen[-1].strip():
        chosen = chosen[:-1]
    while chosen and not chosen[0].strip():
        chosen = chosen[1:]
    # A linter's noqa comments are for the file, not for the reader.
    chosen = [re.sub(r"\s+#\s?noqa(: [A-Z0-9, ]+)?$", "", line) for line in chosen]
    return textwrap.dedent("\n".join(chosen))


def write() -> int:
    """Rewrite every `example:` block from its source; return how many changed."""
    changed = 0
    for page in PAGES:
        lines = page.read_text().splitlines()
        for block in reversed(blocks(page)):
            if block.example is None:
                continue
            text = source_of(block.example)
            if text != block.text:
                lines[block.line : block.end - 1] = text.splitlines()
                changed += 1
        page.write_text("\n".join(lines) + "\n")
    return changed


if __name__ == "__main__":
    if sys.argv[1:] != ["--write"]:
        sys.exit(__doc__)
    print(f"{write()} block(s) rewritten")
