"""HoloCine prompts as tensors: tokenized to ``text_len`` with the global and per-shot token spans.

The format and the span rule (HoloCine's: each ``[shot cut]`` belongs to the shot before it, a token
to the first span it overlaps) live in ``curation.prompt_format``; this module only makes tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from curation.prompt_format import ShotTruncatedError, clean_prompt, tokenize_prompt, truncate_prompt

__all__ = ["PromptTokenizer", "TokenizedPrompt", "clean_prompt", "truncate_prompt"]


@dataclass
class TokenizedPrompt:
    input_ids: torch.Tensor  # [text_len] long
    attention_mask: torch.Tensor  # [text_len] long
    global_span: tuple[int, int]
    shot_spans: list[tuple[int, int]]


class PromptTokenizer:
    """Tokenizes HoloCine prompts to ``text_len`` tokens and locates the spans (needs a fast tokenizer)."""

    def __init__(self, tokenizer, text_len: int) -> None:
        self.tokenizer = tokenizer
        self.text_len = text_len

    def __call__(self, prompt: str, num_shots: int) -> TokenizedPrompt:
        try:
            tokens = tokenize_prompt(self.tokenizer, prompt, self.text_len)
        except ShotTruncatedError as error:
            # One message whatever the shots: skipped samples are counted by message (data.SkipGuard).
            raise ValueError(f"a shot caption was truncated away at {self.text_len} tokens (data.text_len)") from error
        spans = tokens.spans
        if spans.global_span is None:
            raise ValueError("prompt has no '[global caption]'")
        if len(spans.shot_spans) != num_shots:
            raise ValueError(f"prompt describes {len(spans.shot_spans)} shots, the clip has {num_shots}")
        return TokenizedPrompt(torch.tensor(tokens.input_ids), torch.tensor(tokens.attention_mask),
                               spans.global_span, list(spans.shot_spans))
