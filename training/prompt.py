"""HoloCine prompts: tokenization with the global and per-shot token spans found from character offsets.

A prompt reads ``[global caption] G This scene contains N shots. [per shot caption] S1 [shot cut] S2 …``.
The global span covers the tokens of ``[global caption] G This scene contains N shots.``; shot ``i``'s
span covers the tokens of its caption, the marker before it (``[per shot caption]`` or ``[shot cut]``)
included. Spans are ``[start, end)`` token ranges; end-of-sequence and padding tokens belong to none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

GLOBAL_MARK = "[global caption]"
SHOTS_MARK = "[per shot caption]"
CUT_MARK = "[shot cut]"
_SHOT_COUNT = re.compile(r"This scene contains \d+ shots?\.")


def clean_prompt(prompt: str) -> str:
    """Collapse whitespace, as Wan's umT5 wrapper does before tokenizing."""
    return " ".join(prompt.split())


def truncate_prompt(prompt: str, num_shots: int) -> str:
    """The prompt of the first ``num_shots`` shots (a clip cut short to fit its bucket)."""
    head, sep, shots = prompt.partition(SHOTS_MARK)
    if not sep:
        raise ValueError(f"prompt has no {SHOTS_MARK!r}")
    captions = shots.split(CUT_MARK)[:num_shots]
    count = f"This scene contains {num_shots} shot{'s' if num_shots != 1 else ''}."
    head = _SHOT_COUNT.sub(count, head)
    return head + sep + CUT_MARK.join(captions)


def char_spans(prompt: str) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Character ranges of the global part and of each shot's part of a cleaned prompt."""
    shots_at = prompt.find(SHOTS_MARK)
    if shots_at < 0:
        raise ValueError(f"prompt has no {SHOTS_MARK!r}")
    starts = [shots_at] + [m.start() for m in re.finditer(re.escape(CUT_MARK), prompt)]
    ends = starts[1:] + [len(prompt)]
    return (0, shots_at), list(zip(starts, ends))


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
        prompt = clean_prompt(prompt)
        enc = self.tokenizer(prompt, max_length=self.text_len, padding="max_length", truncation=True,
                             return_offsets_mapping=True, return_tensors="pt")
        offsets = enc["offset_mapping"][0].tolist()
        mask = enc["attention_mask"][0]
        global_chars, shot_chars = char_spans(prompt)
        if len(shot_chars) != num_shots:
            raise ValueError(f"prompt describes {len(shot_chars)} shots, the clip has {num_shots}")
        real = int(mask.sum())
        global_span = _token_span(offsets[:real], *global_chars)
        shot_spans = [_token_span(offsets[:real], *chars) for chars in shot_chars]
        if any(end <= start for start, end in shot_spans):
            raise ValueError(f"a shot caption was truncated away at {self.text_len} tokens (data.text_len)")
        return TokenizedPrompt(enc["input_ids"][0], mask, global_span, shot_spans)


def _token_span(offsets: list[tuple[int, int]], char_start: int, char_end: int) -> tuple[int, int]:
    """[first, last + 1) of the tokens whose characters start inside [char_start, char_end)."""
    inside = [i for i, (a, b) in enumerate(offsets) if b > a and char_start <= a < char_end]
    return (inside[0], inside[-1] + 1) if inside else (0, 0)
