"""Every code block of the docs that shows code is a copy of a file the tests run, and the
copy is current; the Markdown has no snippet embeds, so it reads the same on GitHub."""

from __future__ import annotations

import pytest

from .blocks import PAGES, ROOT, blocks, source_of

EXAMPLES = [b for page in PAGES for b in blocks(page) if b.example]

# Pages whose every Python block must be a file the tests run.
RUN_PAGES = [
    "docs/index.md",
    "docs/quickstart.md",
    "docs/concepts/cells.md",
    "docs/concepts/mesh.md",
    "docs/how-to/testing.md",
]


@pytest.mark.parametrize("block", EXAMPLES, ids=lambda b: b.where())
def test_the_block_is_a_copy_of_its_file(block) -> None:
    assert block.text == source_of(block.example), (
        f"{block.where()} is not a copy of {block.example}: "
        "run `python -m tests.docs.blocks --write`"
    )


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_snippet_embeds(page) -> None:
    # GitHub shows an embed as its marker line and no code.
    embeds = [b.where() for b in blocks(page) if b.text.lstrip().startswith("--8<--")]
    assert not embeds, (
        f"{embeds}: write the code out in the block with an `<!-- example: PATH -->` "
        "comment before it (see tests/docs/blocks.py)"
    )


@pytest.mark.parametrize("name", RUN_PAGES)
def test_every_python_block_is_run_by_the_tests(name: str) -> None:
    loose = [b.where() for b in blocks(ROOT / name) if b.language == "python" and not b.example]
    assert not loose, (
        f"{loose}: put the code in a file the tests run (tests/docs/test_<page>_page.py) and "
        "show it with an `<!-- example: PATH:SECTION -->` comment"
    )


def test_every_example_is_imported_by_a_test() -> None:
    sources = {b.example.partition(":")[0] for b in EXAMPLES}
    tests = (
        "".join(p.read_text() for p in (ROOT / "tests").rglob("*.py") if p.parent.name != "docs")
        + (ROOT / "tests" / "docs" / "test_mesh_page.py").read_text()
    )
    for source in sorted(sources):
        if source.startswith("tests/"):
            continue  # a test file: collected by pytest
        module = source.removesuffix(".py").replace("/", ".")
        assert source.endswith((".yml", ".yaml", ".json")) or module in tests or source in tests, (
            f"{source} is shown in the docs but no test imports or runs it"
        )
