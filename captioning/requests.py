"""Requests every engine takes: OpenAI chat messages (images as data URLs), a JSON schema, a token cap.

Plain functions of plain data, so a Ray Data job can build requests row by row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Sequence

from .prompts import PromptSet
from .schema import Limits, ShotDraft, caption_schema, max_answer_chars, max_draft_chars, shot_draft_schema

Message = dict[str, Any]


@dataclass(frozen=True)
class ChatRequest:
    messages: list[Message]
    schema: dict[str, Any]
    max_tokens: int
    # Sampling temperature; engines pass it through unchanged.
    temperature: float = 0.2


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def _limit_values(limits: Limits) -> dict[str, int]:
    return {
        "max_characters": limits.max_characters,
        "global_chars": limits.global_chars,
        "shot_chars": limits.shot_chars,
        "camera_chars": limits.camera_chars,
        "description_chars": limits.description_chars,
    }


def _shot_frames(frame_urls: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    # Each shot's frames follow a "Shot N:" label, so the model knows where the cuts are.
    content: list[dict[str, Any]] = []
    for number, urls in enumerate(frame_urls, start=1):
        content.append(_text(f"Shot {number}:"))
        content.extend(_image(url) for url in urls)
    return content


def _request(
    prompts: PromptSet,
    content: list[dict[str, Any]],
    schema: dict[str, Any],
    bound: int,
    max_tokens: int | None,
    temperature: float,
) -> ChatRequest:
    # The schema bound lets a constrained answer always finish; a smaller configured cap wins.
    return ChatRequest(
        messages=[
            {"role": "system", "content": prompts.render("system")},
            {"role": "user", "content": content},
        ],
        schema=schema,
        max_tokens=bound if max_tokens is None else min(bound, max_tokens),
        temperature=temperature,
    )


def joint_request(
    frame_urls: Sequence[Sequence[str]],
    prompts: PromptSet,
    limits: Limits,
    max_tokens: int | None = None,
    temperature: float = 0.2,
) -> ChatRequest:
    """One request for a whole scene: the frames of every shot, answered by one caption object."""
    num_shots = len(frame_urls)
    frames_per_shot = max(len(urls) for urls in frame_urls)
    instruction = prompts.render(
        "joint", num_shots=num_shots, frames_per_shot=frames_per_shot, **_limit_values(limits)
    )
    content = [*_shot_frames(frame_urls), _text(instruction)]
    bound = max_answer_chars(num_shots, limits)
    return _request(prompts, content, caption_schema(num_shots, limits), bound, max_tokens, temperature)


def shot_request(
    urls: Sequence[str],
    shot_number: int,
    num_shots: int,
    prompts: PromptSet,
    limits: Limits,
    max_tokens: int | None = None,
    temperature: float = 0.2,
) -> ChatRequest:
    """Two-pass, first pass: one shot described alone (``shot_number`` counts from 1)."""
    instruction = prompts.render("shot", shot_number=shot_number, num_shots=num_shots, **_limit_values(limits))
    content = [*(_image(url) for url in urls), _text(instruction)]
    bound = max_draft_chars(limits)
    return _request(prompts, content, shot_draft_schema(limits), bound, max_tokens, temperature)


def global_request(
    drafts: Sequence[ShotDraft],
    frame_urls: Sequence[Sequence[str]],
    prompts: PromptSet,
    limits: Limits,
    max_tokens: int | None = None,
    temperature: float = 0.2,
) -> ChatRequest:
    """Two-pass, second pass: a few frames per shot plus the drafts in, the full caption object out."""
    if len(drafts) != len(frame_urls):
        raise ValueError("one draft per shot is needed")
    listing = "\n".join(
        f"Shot {number}: {draft.caption} (camera: {draft.camera})" for number, draft in enumerate(drafts, start=1)
    )
    instruction = prompts.render("global", num_shots=len(drafts), drafts=listing, **_limit_values(limits))
    content = [*_shot_frames(frame_urls), _text(instruction)]
    bound = max_answer_chars(len(drafts), limits)
    return _request(prompts, content, caption_schema(len(drafts), limits), bound, max_tokens, temperature)


def retry_request(request: ChatRequest, answer: str, error: str, prompts: PromptSet) -> ChatRequest:
    """The same request with the rejected answer and the reason appended, to be asked again."""
    messages = [
        *request.messages,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": prompts.render("retry", error=error)},
    ]
    return replace(request, messages=messages)
