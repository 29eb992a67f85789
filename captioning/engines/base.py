"""What every engine is: chat requests in, raw answer texts (or transport errors) out, in order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

from ..requests import ChatRequest


@dataclass(frozen=True)
class Reply:
    """An engine's answer to one request: the text, or why there is none.

    ``error`` is for failures of the engine or transport, after the engine's own retries; an
    answer that is merely wrong comes back as ``text`` and is judged by the captioner.
    """

    text: str | None = None
    error: str | None = None
    # Transport attempts spent on this request (an OpenAI-compatible server may need several).
    attempts: int = 1
    # Tokens the model read (images included) and wrote, where the engine reports them.
    prompt_tokens: int | None = None
    output_tokens: int | None = None


class Engine(Protocol):
    name: str
    model: str

    def generate(self, requests: Sequence[ChatRequest]) -> list[Reply]:
        """One reply per request, in the same order."""
        ...
