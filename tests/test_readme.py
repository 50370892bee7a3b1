"""Every ```python block of README.md runs, so a broken example fails the tests.

How the blocks run: in README order, in this process, in one namespace shared by all of them,
as cells of one notebook would (the analyses of "One interface for every model family" use the
``model`` and ``data`` of "In a notebook"). One test per block, so a failure names the block
and its first line in README.md; after a failure the later blocks are skipped, since they
build on the namespace it left incomplete.

The working directory is a fresh folder ``repo`` inside a temporary folder, so the files the
examples write (``demo.keras``, ``volcano.png``) land there. Paths in the README are relative
to the repository's root, as everywhere in it: the folder ``shared`` next to ``repo`` links
to the real ``../shared``, so ``../shared/data/snare_mouse_cortex.h5mu`` resolves. A block
that names that file is skipped, with the reason, when the file is missing; it must not
define anything that later blocks use.

The examples must stay quick (the whole file runs in well under a minute on a 2-core CPU):
the README trains on simulated data for a few epochs and shows the longer SNARE-seq settings
in words.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SHARED = ROOT.parent / "shared"
SNARE_NAME = "snare_mouse_cortex.h5mu"
SNARE = SHARED / "data" / SNARE_NAME


@dataclass(frozen=True)
class Block:
    """One fenced Python block: its code, the heading above it and its first code line's number."""

    section: str
    line: int
    code: str


def python_blocks(text: str) -> list[Block]:
    """The ```python blocks of a Markdown text, in order.

    Parameters
    ----------
    text
        Markdown.

    Returns
    -------
    list of Block
    """
    blocks, section, code, start = [], "", None, 0
    for number, line in enumerate(text.splitlines(), start=1):
        if code is None and line.startswith("#"):
            section = line.lstrip("#").strip()
        elif code is None and line.strip() == "```python":
            code, start = [], number + 1
        elif code is not None and line.strip() == "```":
            blocks.append(Block(section, start, "\n".join(code) + "\n"))
            code = None
        elif code is not None:
            code.append(line)
    return blocks


BLOCKS = python_blocks(README.read_text())


def _id(index: int, block: Block) -> str:
    return f"{index:02d}-" + re.sub(r"[^a-z0-9]+", "-", block.section.lower()).strip("-")


def test_the_readme_has_the_blocks_this_file_runs():
    # The parser must find the examples: a README restructured so that none is found would
    # otherwise pass with nothing run.
    sections = {block.section for block in BLOCKS}
    assert len(BLOCKS) >= 4 and {"In a notebook", "Extending"} <= sections, sections


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """The shared namespace, the working folder and the outcome of the blocks run so far."""
    base = tmp_path_factory.mktemp("readme")
    (base / "repo").mkdir()
    if SHARED.exists():
        (base / "shared").symlink_to(SHARED, target_is_directory=True)
    state = {"namespace": {"__name__": "__readme__"}, "cwd": base / "repo", "failed": None}
    yield state
    import matplotlib.pyplot as plt

    plt.close("all")  # the examples draw figures; free them for the rest of the session


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[_id(i, b) for i, b in enumerate(BLOCKS)])
def test_readme_block_runs(index, notebook, monkeypatch):
    block = BLOCKS[index]
    if notebook["failed"] is not None:
        pytest.skip(f"an earlier README block failed ({notebook['failed']})")
    if SNARE_NAME in block.code and not SNARE.exists():
        pytest.skip(f"README.md:{block.line} reads the SNARE-seq file, which is not at {SNARE}")
    monkeypatch.chdir(notebook["cwd"])
    # Padding to the block's line makes tracebacks point at README.md's own lines.
    code = compile("\n" * (block.line - 1) + block.code, str(README), "exec")
    notebook["failed"] = f"README.md:{block.line}, section {block.section!r}"
    exec(code, notebook["namespace"])  # noqa: S102 (running the README's own code is the test)
    notebook["failed"] = None
