"""HoloCine's prompt string and the shard sample's caption fields.

HoloCine's format (its README and ``HoloCine_inference_*.py``)::

    [global caption] {global} This scene contains {N} shots. [per shot caption] {shot 1} [shot cut] {shot 2} ...
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from .schema import Caption

_SHOT_COUNT = re.compile(r"\s*This scene contains \d+ shots?\.\s*")
_WHITESPACE = re.compile(r"\s+")


def _clean(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def holocine_prompt(global_caption: str, shot_captions: Sequence[str]) -> str:
    """HoloCine's prompt; a shot-count sentence already in ``global_caption`` is replaced by the true one."""
    if not shot_captions:
        raise ValueError("a HoloCine prompt needs at least one shot caption")
    body = _clean(_SHOT_COUNT.sub(" ", global_caption))
    count = f"This scene contains {len(shot_captions)} shots."
    shots = " [shot cut] ".join(_clean(text) for text in shot_captions)
    return f"[global caption] {body} {count} [per shot caption] {shots}"


def global_text(caption: Caption) -> str:
    """The global caption as HoloCine needs it: each character introduced, then the scene.

    HoloCine's prompts introduce every character with its appearance ("[character1] is a …")
    before the setting. The VLM gives appearances in ``characters`` and the setting and action in
    ``global_caption``; joining them here makes every introduction present and worded alike.
    """
    intros = [f"{tag} is {description.rstrip('.')}." for tag, description in caption.characters.items()]
    return _clean(" ".join([*intros, caption.global_caption]))


def caption_prompt(caption: Caption) -> str:
    """The HoloCine prompt of a validated caption."""
    return holocine_prompt(global_text(caption), [shot.caption for shot in caption.shots])


def sample_fields(
    caption: Caption, shot_spans: Sequence[tuple[int, int]], captioner: dict[str, str]
) -> dict[str, Any]:
    """The caption keys of a shard sample (``global_caption`` … ``captioner``, see DESIGN.md).

    Raises ``ValueError`` when the caption's shot count differs from the scene's: such a caption
    must never be written.
    """
    if len(caption.shots) != len(shot_spans):
        raise ValueError(f"caption has {len(caption.shots)} shots, scene has {len(shot_spans)}")
    return {
        "global_caption": global_text(caption),
        "characters": dict(caption.characters),
        "shots": [
            {
                "start_frame": start,
                "end_frame": end,
                "caption": shot.caption,
                "camera": shot.camera,
                "characters": list(shot.characters),
            }
            for shot, (start, end) in zip(caption.shots, shot_spans)
        ],
        "shot_cut_frames": [start for start, _ in shot_spans[1:]],
        "prompt": caption_prompt(caption),
        "captioner": dict(captioner),
    }
