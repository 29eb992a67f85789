"""Versioned prompt templates: ``prompts/<version>/*.txt``, filled with ``string.Template``.

``string.Template`` (``$name``) rather than ``str.format`` because the prompts quote JSON, whose
braces ``str.format`` would take for fields. The version (the directory's name) goes into every
caption's ``captioner.prompt_version``, so a template is never edited in place: copy the
directory to a new version instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from string import Template

PROMPTS_DIR = Path(__file__).parent / "prompts"
_NAMES = ("system", "joint", "shot", "global", "retry")


@dataclass(frozen=True)
class PromptSet:
    version: str
    templates: dict[str, str]

    def render(self, name: str, **values: object) -> str:
        """Fill template ``name``; a placeholder without a value raises ``KeyError``."""
        return Template(self.templates[name]).substitute(values).strip()


def load_prompts(version: str = "v1", directory: str | Path | None = None) -> PromptSet:
    """Load the templates of ``version`` from ``directory`` (default: the packaged prompts)."""
    folder = Path(directory or PROMPTS_DIR) / version
    missing = [name for name in _NAMES if not (folder / f"{name}.txt").is_file()]
    if missing:
        raise FileNotFoundError(f"prompt version {version!r} in {folder.parent} lacks {missing}")
    return PromptSet(version, {name: (folder / f"{name}.txt").read_text(encoding="utf-8") for name in _NAMES})
