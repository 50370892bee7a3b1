"""Every ```python block of README.md runs, so a broken example fails the tests.

How the blocks run: in README order, in a fresh interpreter, in one namespace shared by all of them,
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

import json
import os
import re
import subprocess
import sys
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


#: Runs in a fresh interpreter: every block in order in one namespace, one JSON line of outcomes.
CHILD = """
import json, sys, traceback
sys.path.insert(0, sys.argv[1])
from test_readme import README, SNARE, SNARE_NAME, python_blocks
namespace, outcomes = {"__name__": "__readme__"}, []
for block in python_blocks(README.read_text()):
    if SNARE_NAME in block.code and not SNARE.exists():
        outcomes.append(["skip", f"README.md:{block.line} reads the SNARE-seq file, which is not at {SNARE}"])
        continue
    try:
        exec(compile("\\n" * (block.line - 1) + block.code, str(README), "exec"), namespace)
        outcomes.append(["ok", ""])
    except BaseException:
        outcomes.append(["fail", traceback.format_exc()])
        break
print("@@outcomes@@" + json.dumps(outcomes))
"""


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """The README's blocks run once, in order, in a fresh interpreter (as a user would run them,
    and apart from this process's TensorFlow state: a second tf.distribute strategy in a process
    whose earlier tests made one on other devices fails its collectives)."""
    base = tmp_path_factory.mktemp("readme")
    (base / "repo").mkdir()
    if SHARED.exists():
        (base / "shared").symlink_to(SHARED, target_is_directory=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}
    done = subprocess.run([sys.executable, "-c", CHILD, str(Path(__file__).parent)], cwd=base / "repo", env=env,
                          capture_output=True, text=True, timeout=900)
    lines = [line for line in done.stdout.splitlines() if line.startswith("@@outcomes@@")]
    assert lines, f"the README run did not finish:\n{done.stderr[-4000:]}"
    return json.loads(lines[-1].removeprefix("@@outcomes@@"))


@pytest.mark.parametrize("index", range(len(BLOCKS)), ids=[_id(i, b) for i, b in enumerate(BLOCKS)])
def test_readme_block_runs(index, outcomes):
    block = BLOCKS[index]
    if index >= len(outcomes):
        pytest.skip("an earlier README block failed")
    status, detail = outcomes[index]
    if status == "skip":
        pytest.skip(detail)
    assert status == "ok", f"README.md:{block.line}, section {block.section!r}:\n{detail}"
