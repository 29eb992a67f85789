"""Hierarchical scene captioning for HoloCine: a global caption plus per-shot captions.

Entry point: ``Captioner(CaptionerConfig(...)).caption(scenes) -> list[CaptionResult]``.
"""

from .captioner import CaptionResult, Captioner, build_joint_request
from .config import CaptionerConfig, OpenAIConfig, TransformersConfig, VllmConfig
from .frames import SceneInput
from .render import holocine_prompt
from .schema import Caption, CaptionError, Limits, ShotCaption, caption_schema, parse_caption

__all__ = [
    "Caption",
    "CaptionError",
    "CaptionResult",
    "Captioner",
    "CaptionerConfig",
    "Limits",
    "OpenAIConfig",
    "SceneInput",
    "ShotCaption",
    "TransformersConfig",
    "VllmConfig",
    "build_joint_request",
    "caption_schema",
    "holocine_prompt",
    "parse_caption",
]
