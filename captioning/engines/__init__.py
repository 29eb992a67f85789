"""Engines behind one interface (:class:`~captioning.engines.base.Engine`); imported lazily so that
each engine's heavy dependencies (torch + xgrammar, httpx, ray + vllm) load only when it is used."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import CaptionerConfig
    from .base import Engine


def make_engine(config: "CaptionerConfig") -> "Engine":
    if not config.model:
        raise ValueError("config.model is empty: name a model directory or a served model")
    if config.engine == "transformers":
        from .transformers_engine import TransformersEngine

        return TransformersEngine(config.model, config.transformers)
    if config.engine == "openai":
        from .openai_engine import OpenAIEngine

        return OpenAIEngine(config.model, config.openai)
    from .vllm_engine import VllmEngine

    return VllmEngine(config.model, config.vllm)
