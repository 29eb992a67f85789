"""vLLM offline inside a Ray job, through ``ray.data.llm`` (``vLLMEngineProcessorConfig`` + ``build_processor``).

Kept thin on purpose: vLLM cannot be installed on the development machines, so everything that
can be tested without it lives in the plain row functions below. Requests travel as JSON strings
because Arrow would coerce the messages' and schemas' nested, ragged dicts into structs.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Sequence

from ..config import VllmConfig
from ..requests import ChatRequest
from .base import Reply

logger = logging.getLogger(__name__)


def request_row(request: ChatRequest, index: int) -> dict[str, Any]:
    """A Ray Data row carrying one request; ``request_index`` matches the reply back to it."""
    return {
        "request_index": index,
        "messages_json": json.dumps(request.messages),
        "schema_json": json.dumps(request.schema),
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
    }


def preprocess(row: dict[str, Any]) -> dict[str, Any]:
    """``build_processor``'s preprocess: the columns vLLM's stages read, with structured JSON output."""
    return {
        "request_index": row["request_index"],
        "messages": json.loads(row["messages_json"]),
        "sampling_params": {
            "temperature": row["temperature"],
            "max_tokens": row["max_tokens"],
            # vLLM's StructuredOutputsParams(json=...) takes the schema as a JSON string or a dict.
            "structured_outputs": {"json": row["schema_json"]},
        },
    }


def postprocess(row: dict[str, Any]) -> dict[str, Any]:
    """``build_processor``'s postprocess: the answer text, or the engine's error for the row."""
    return {
        "request_index": row["request_index"],
        "text": row.get("generated_text") or "",
        "error": row.get("__inference_error__") or None,
    }


def replies_from_rows(rows: Sequence[dict[str, Any]], count: int) -> list[Reply]:
    """Put processed rows back in request order; a request without a row is an error, not lost."""
    by_index = {int(row["request_index"]): row for row in rows}
    replies = []
    for index in range(count):
        row = by_index.get(index)
        if row is None:
            replies.append(Reply(error="vllm: no output row for this request"))
        elif row["error"]:
            replies.append(Reply(error=f"vllm: {row['error']}"))
        else:
            replies.append(Reply(text=row["text"]))
    return replies


class VllmEngine:
    name = "vllm"

    def __init__(self, model: str, config: VllmConfig):
        self.model = model
        self.config = config

    def processor_config(self) -> Any:
        from ray.data.llm import vLLMEngineProcessorConfig

        return vLLMEngineProcessorConfig(
            model_source=self.model,
            engine_kwargs=dict(self.config.engine_kwargs),
            batch_size=self.config.batch_size,
            concurrency=self.config.concurrency,
            accelerator_type=self.config.accelerator_type,
            # Images arrive as OpenAI image_url data URLs; this stage turns them into vLLM inputs.
            prepare_multimodal_stage={"enabled": True},
            chat_template_stage={"enabled": True},
            # A failing row becomes an error for that scene rather than failing the whole job.
            should_continue_on_error=True,
        )

    def generate(self, requests: Sequence[ChatRequest]) -> list[Reply]:
        import ray.data
        from ray.data.llm import build_processor

        processor = build_processor(self.processor_config(), preprocess=preprocess, postprocess=postprocess)
        dataset = ray.data.from_items([request_row(request, i) for i, request in enumerate(requests)])
        rows = processor(dataset).take_all()
        logger.info("vllm engine: %d requests, %d rows back", len(requests), len(rows))
        return replies_from_rows(rows, len(requests))
