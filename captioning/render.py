"""HoloCine's prompt string and the shard sample's caption fields.

The format itself (render, parse, truncate, spans) lives in ``curation.prompt_format``.
"""

from __future__ import annotations

from typing import Any, Sequence

from curation.prompt_format import clean_prompt, render_prompt

from .schema import Caption


def holocine_prompt(global_caption: str, shot_captions: Sequence[str]) -> str:
    """HoloCine's prompt (``curation.prompt_format.render_prompt``, the format's one home)."""
    return render_prompt(global_caption, shot_captions)


def global_text(caption: Caption) -> str:
    """The global caption as HoloCine needs it: each character introduced, then the scene.

    HoloCine's prompts introduce every character with its appearance ("[character1] is a …")
    before the setting. The VLM gives appearances in ``characters`` and the setting and action in
    ``global_caption``; joining them here makes every introduction present and worded alike.
    """
    intros = [f"{tag} is {description.rstrip('.')}." for tag, description in caption.characters.items()]
    return clean_prompt(" ".join([*intros, caption.global_caption]))


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
