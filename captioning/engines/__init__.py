"""Engines behind one interface (:class:`~captioning.engines.base.Engine`); imported lazily so that
each engine's heavy dependencies (torch + xgrammar, httpx, ray + vllm) load only when it is used."""

from __future__ import annotations

import os
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


class EngineUnavailable(RuntimeError):
    """The configured model or server cannot be used; the message is one line for a person."""


def check_engine(config: "CaptionerConfig") -> None:
    """Fail fast, before any work, when the model or server cannot serve: a local model must be a
    model directory (or a name in the Hugging Face cache), a server must answer and list the model."""
    if not config.model:
        raise EngineUnavailable(
            "no model: name a model directory (--model DIR) or a served model (--endpoint URL --model NAME)"
        )
    if config.engine == "openai":
        _check_server(config.openai.base_url, config.model, config.openai.api_key_env)
    else:
        _check_model_dir(config.model)


def _check_model_dir(model: str) -> None:
    from transformers import AutoConfig

    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            raise EngineUnavailable(f"model directory {model} has no config.json: not a Hugging Face model")
        return
    try:
        AutoConfig.from_pretrained(model, local_files_only=True)
    except Exception:
        raise EngineUnavailable(
            f"model {model} is not a directory here, nor in the Hugging Face cache: "
            "pass the directory of a downloaded model"
        ) from None


def _check_server(base_url: str, model: str, api_key_env: str) -> None:
    import httpx

    key = os.environ.get(api_key_env)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    url = base_url.rstrip("/") + "/models"
    try:
        response = httpx.get(url, headers=headers, timeout=30)
        response.raise_for_status()
        served = [entry.get("id") for entry in response.json().get("data", [])]
    except (httpx.HTTPError, ValueError) as exc:
        raise EngineUnavailable(f"cannot list the models of the server at {base_url}: {exc}") from None
    if served and model not in served:
        raise EngineUnavailable(f"the server at {base_url} does not serve model {model!r} (it serves {served})")
