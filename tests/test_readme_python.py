"""The README's Python snippets, executed as written (a ```python block under ``<!-- readme-python: NAME -->``)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"<!-- readme-python: ([\w-]+) -->")


def python_blocks(readme: str) -> dict[str, str]:
    lines = readme.splitlines()
    blocks = {}
    for i, line in enumerate(lines):
        match = MARKER.fullmatch(line.strip())
        if match:
            assert lines[i + 1].strip() == "```python", f"marker {match.group(1)} is not above a ```python block"
            end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
            blocks[match.group(1)] = "\n".join(lines[i + 2:end])
    return blocks


BLOCKS = python_blocks(README.read_text())


def test_the_model_snippet_is_marked():
    assert "model" in BLOCKS


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_snippet_runs_as_written(name):
    namespace: dict = {}
    exec(compile(BLOCKS[name], f"README.md:{name}", "exec"), namespace)
    if name == "model":
        assert namespace["v"].shape == namespace["latents"].shape == (1, 4, 7, 16, 16)
