"""vLLM in this process (``vllm.LLM``): the model loads once, each batch of requests is one
``LLM.chat`` call, and vLLM's structured output constrains every answer to the request's schema.

The engine lives wherever the captioner lives: the pipeline's captioning actors (Ray gives each
its GPUs), or a plain process (``python -m captioning --engine vllm``). vLLM batches the
requests of one call continuously; callers hand it many scenes at once (``VllmConfig.batch_size``).
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from ..config import VllmConfig
from ..requests import ChatRequest
from .base import Reply

logger = logging.getLogger(__name__)


def engine_args(model: str, config: VllmConfig) -> dict[str, Any]:
    """``vllm.LLM``'s keyword arguments: the model, room for a scene's frames, then the user's own."""
    return {
        "model": model,
        # vLLM allows one image per prompt unless told more; a scene sends several per shot.
        "limit_mm_per_prompt": {"image": config.max_images_per_prompt},
        # vLLM's grammars allow any whitespace between JSON tokens unless told otherwise; a request's
        # token cap (the schema's length bound) counts none, so with it an answer could be cut off.
        "structured_outputs_config": {"disable_any_whitespace": True},
        **config.engine_kwargs,
    }


class VllmEngine:
    name = "vllm"

    def __init__(self, model: str, config: VllmConfig):
        from vllm import LLM

        self.model = model
        self.config = config
        self.llm = LLM(**engine_args(model, config))
        logger.info("vllm engine: %s loaded", model)

    def _sampling_params(self, request: ChatRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        return SamplingParams(
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            structured_outputs=StructuredOutputsParams(json=request.schema),
        )

    def generate(self, requests: Sequence[ChatRequest]) -> list[Reply]:
        try:
            return self._chat(requests)
        except ValueError as exc:
            # vLLM checks every prompt before generating any (too many images, longer than the
            # model's context) and rejects the whole call for one bad prompt: ask one by one, so
            # only that request fails.
            if len(requests) == 1:
                return [Reply(error=f"vllm: {exc}")]
            logger.warning("vllm engine: a batch of %d was refused (%s); asking one by one", len(requests), exc)
            return [reply for request in requests for reply in self.generate([request])]

    def _chat(self, requests: Sequence[ChatRequest]) -> list[Reply]:
        outputs = self.llm.chat(
            [request.messages for request in requests],
            [self._sampling_params(request) for request in requests],
            use_tqdm=False,
        )
        return [
            Reply(
                text=output.outputs[0].text,
                prompt_tokens=len(output.prompt_token_ids or ()),
                output_tokens=len(output.outputs[0].token_ids),
            )
            for output in outputs
        ]
