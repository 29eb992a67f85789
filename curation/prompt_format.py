"""HoloCine's prompt format: render, parse, truncate, and locate the global and per-shot token spans.

The one home of the format (DESIGN.md): captioning renders prompts with it, the shard format
validates them with it, training and generation tokenize them with it. It lives in ``curation``
because that is the leaf both ``captioning`` and ``training`` may import; it needs no torch, only a
Hugging Face fast tokenizer (for character offsets) when spans are located.

A prompt reads::

    [global caption] {global} This scene contains {N} shots. [per shot caption] {shot 1} [shot cut] {shot 2} ...

Token spans follow HoloCine's released prompter (``WanPrompter.encode_prompt``), the convention
HoloCine's weights were trained with, on the whitespace-cleaned prompt:

* global: the characters from ``[global caption]`` up to the start of ``[per shot caption]``;
* shot 0: from the start of ``[per shot caption]`` through the *end* of the first ``[shot cut]``;
  shot i: from the end of the i-th ``[shot cut]`` through the end of the (i+1)-th; the last shot:
  from the end of the last ``[shot cut]`` to the end of the prompt. Each ``[shot cut]`` marker thus
  belongs to the shot *before* it;
* a token belongs to the first span (global, shot 0, shot 1, ...) its characters overlap, so a token
  straddling a boundary goes to the earlier span; a span is ``[first token, last token + 1)``;
  special and padding tokens (empty offsets) belong to none.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

GLOBAL_MARK = "[global caption]"
SHOTS_MARK = "[per shot caption]"
CUT_MARK = "[shot cut]"
_COUNT_SENTENCE = re.compile(r"This scene contains \d+ shots?\.")
_SHOT_COUNT = re.compile(rf"\s*{_COUNT_SENTENCE.pattern}\s*")
_WHITESPACE = re.compile(r"\s+")

Span = tuple[int, int]


class ShotTruncatedError(ValueError):
    """A shot has no token: the tokenizer's ``max_length`` cut its caption away."""

    def __init__(self, missing: list[int], num_shots: int) -> None:
        super().__init__(f"shot(s) {missing} of {num_shots} have no token (truncated away?)")
        self.missing, self.num_shots = missing, num_shots


def clean_prompt(text: str) -> str:
    """The text as Wan's umT5 wrapper cleans it before tokenizing (HTML entities, collapsed whitespace).

    Wan also runs ``ftfy.fix_text``, which only repairs mojibake and odd Unicode; captions are plain
    text, so it is left out rather than made a dependency. Spans are located on this cleaned text,
    the same text the tokenizer sees, so character and token offsets always agree.
    """
    return _WHITESPACE.sub(" ", html.unescape(html.unescape(text))).strip()


def shot_count_sentence(num_shots: int) -> str:
    # HoloCine's own helper writes "shots" whatever the count; keep its wording exactly.
    return f"This scene contains {num_shots} shots."


@dataclass(frozen=True)
class HoloCinePrompt:
    """A prompt's parts: the global caption (without the shot-count sentence) and each shot's caption."""

    global_caption: str
    shot_captions: tuple[str, ...]

    @property
    def num_shots(self) -> int:
        return len(self.shot_captions)

    def render(self) -> str:
        return render_prompt(self.global_caption, self.shot_captions)


def render_prompt(global_caption: str, shot_captions: Sequence[str]) -> str:
    """HoloCine's prompt; a shot-count sentence already in ``global_caption`` is replaced by the true one."""
    if not shot_captions:
        raise ValueError("a HoloCine prompt needs at least one shot caption")
    body = clean_prompt(_SHOT_COUNT.sub(" ", global_caption))
    shots = f" {CUT_MARK} ".join(clean_prompt(text) for text in shot_captions)
    return f"{GLOBAL_MARK} {body} {shot_count_sentence(len(shot_captions))} {SHOTS_MARK} {shots}"


def parse_prompt(prompt: str) -> HoloCinePrompt:
    """The parts of a HoloCine prompt; raises ``ValueError`` when a marker is missing."""
    head, sep, shots = clean_prompt(prompt).partition(SHOTS_MARK)
    if not sep:
        raise ValueError(f"prompt has no {SHOTS_MARK!r}")
    _, found, body = head.partition(GLOBAL_MARK)
    if not found:
        raise ValueError(f"prompt has no {GLOBAL_MARK!r}")
    global_caption = clean_prompt(_SHOT_COUNT.sub(" ", body))
    return HoloCinePrompt(global_caption, tuple(part.strip() for part in shots.split(CUT_MARK)))


def count_shots(prompt: str) -> int:
    """Shots a prompt describes: one more than its ``[shot cut]`` markers."""
    return prompt.count(CUT_MARK) + 1


def truncate_prompt(prompt: str, num_shots: int) -> str:
    """The prompt of the first ``num_shots`` shots (a clip cut short to fit its bucket).

    A prefix of the prompt with the shot-count sentence corrected, so the kept shots' text, and with
    it their place in the token sequence, is as in the full prompt.
    """
    head, sep, shots = prompt.partition(SHOTS_MARK)
    if not sep:
        raise ValueError(f"prompt has no {SHOTS_MARK!r}")
    if num_shots < 1:
        raise ValueError(f"need at least one shot, got {num_shots}")
    captions = shots.split(CUT_MARK)[:num_shots]
    head = _COUNT_SENTENCE.sub(shot_count_sentence(num_shots), head)
    return head + sep + CUT_MARK.join(captions)


@dataclass(frozen=True)
class PromptSpans:
    """``[start, end)`` ranges of the global part and of each shot's part (characters or tokens).

    ``global_span`` is None for a prompt without ``[global caption]`` (a plain Wan prompt): the model
    then uses full cross-attention, as HoloCine's pipeline does.
    """

    global_span: Span | None
    shot_spans: tuple[Span, ...]


def char_spans(prompt: str) -> PromptSpans:
    """HoloCine's character spans of an already cleaned prompt (see the module docstring)."""
    global_at = prompt.find(GLOBAL_MARK)
    shots_at = prompt.find(SHOTS_MARK)
    global_span = None
    if global_at >= 0:
        global_span = (global_at, shots_at if shots_at >= 0 else len(prompt))
    shots: list[Span] = []
    if shots_at >= 0:
        start = shots_at
        for cut in re.finditer(re.escape(CUT_MARK), prompt):
            shots.append((start, cut.end()))
            start = cut.end()
        if start < len(prompt):  # a prompt ending on a marker has no last shot
            shots.append((start, len(prompt)))
    return PromptSpans(global_span, tuple(shots))


def token_spans(offsets: Sequence[Sequence[int]], chars: PromptSpans) -> PromptSpans:
    """Token spans from a tokenizer's offset mapping over the cleaned prompt and its character spans.

    Raises ``ShotTruncatedError`` when a shot has no token (truncated away): its window would be empty.
    """
    ordered = ([chars.global_span] if chars.global_span else []) + list(chars.shot_spans)
    members: list[list[int]] = [[] for _ in ordered]
    for index, (start, end) in enumerate(offsets):
        if start == end:  # special and padding tokens
            continue
        owner = next((k for k, (a, b) in enumerate(ordered) if start < b and end > a), None)
        if owner is not None:
            members[owner].append(index)
    spans = [(m[0], m[-1] + 1) if m else None for m in members]
    global_span = spans.pop(0) if chars.global_span else None
    missing = [i for i, span in enumerate(spans) if span is None]
    if missing:
        raise ShotTruncatedError(missing, len(spans))
    return PromptSpans(global_span, tuple(spans))


@dataclass
class PromptTokens:
    """A tokenized prompt, padded to ``max_length``, with its token spans."""

    input_ids: list[int]
    attention_mask: list[int]
    spans: PromptSpans
    text: str  # the cleaned prompt that was tokenized
    offsets: list[tuple[int, int]]  # each token's characters in ``text``


def tokenize_prompt(tokenizer: Any, prompt: str, max_length: int) -> PromptTokens:
    """Clean, tokenize (padded and truncated to ``max_length``) and locate the spans; needs a fast tokenizer."""
    text = clean_prompt(prompt)
    enc = tokenizer(text, max_length=max_length, padding="max_length", truncation=True,
                    return_offsets_mapping=True)
    spans = token_spans(enc["offset_mapping"], char_spans(text))
    offsets = [tuple(pair) for pair in enc["offset_mapping"]]
    return PromptTokens(list(enc["input_ids"]), list(enc["attention_mask"]), spans, text, offsets)
