"""A local Hugging Face VLM directory, batched ``generate`` with xgrammar-constrained decoding."""

from __future__ import annotations

import json
import logging
from itertools import groupby
from typing import Any, Sequence

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from ..config import TransformersConfig
from ..frames import image_from_data_url
from ..requests import ChatRequest
from .base import Reply

logger = logging.getLogger(__name__)


def to_hf_messages(messages: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[Any]]:
    """OpenAI chat messages to the processor's form: image parts become placeholders, images a list.

    The same conversion ``transformers serve`` applies, so both engines prompt the model alike.
    """
    converted, images = [], []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            converted.append({"role": message["role"], "content": [{"type": "text", "text": content}]})
            continue
        parts = []
        for part in content:
            if part["type"] == "image_url":
                images.append(image_from_data_url(part["image_url"]["url"]))
                parts.append({"type": "image"})
            else:
                parts.append({"type": "text", "text": part["text"]})
        converted.append({"role": message["role"], "content": parts})
    return converted, images


def grammar_tokenizer_info(tokenizer: Any, vocab_size: int) -> Any:
    """xgrammar's view of the vocabulary, with special tokens unusable inside the answer.

    xgrammar takes added tokens such as ``<image>`` for their literal text, so a grammar would let
    the model emit them inside a JSON string, where decoding then drops them. Blank entries are
    treated as special (never allowed); stop tokens keep their place.
    """
    import xgrammar as xgr

    detected = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
    stop_ids = detected.stop_token_ids
    special = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special} - set(stop_ids)
    vocab = [b"" if i in special else token for i, token in enumerate(detected.decoded_vocab)]
    return xgr.TokenizerInfo(
        vocab,
        vocab_type=xgr.VocabType.RAW,  # decoded_vocab is already raw bytes
        vocab_size=vocab_size,
        stop_token_ids=stop_ids,
        add_prefix_space=False,
    )


class TransformersEngine:
    name = "transformers"

    def __init__(self, model_dir: str, config: TransformersConfig):
        self.model = model_dir
        self.config = config
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype: Any = config.dtype
        if dtype == "auto":
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        self.device = torch.device(device)
        self.processor = AutoProcessor.from_pretrained(model_dir)
        # Batched generation appends to the right end of every row, so padding goes on the left.
        self.processor.tokenizer.padding_side = "left"
        kwargs: dict[str, Any] = {"dtype": dtype}
        if config.attn_implementation:
            kwargs["attn_implementation"] = config.attn_implementation
        self.net = AutoModelForImageTextToText.from_pretrained(model_dir, **kwargs).to(self.device).eval()
        self._stop_ids = self._stop_token_ids()
        self._compiler = None
        self._grammars: dict[str, Any] = {}
        if config.constrained:
            import xgrammar as xgr

            vocab_size = self.net.get_output_embeddings().weight.shape[0]
            self._compiler = xgr.GrammarCompiler(grammar_tokenizer_info(self.processor.tokenizer, vocab_size))
        logger.info("transformers engine: %s on %s (%s), constrained=%s", model_dir, device, dtype, config.constrained)

    def _stop_token_ids(self) -> list[int]:
        eos = self.net.generation_config.eos_token_id
        ids = eos if isinstance(eos, list) else [eos]
        return [i for i in ids if i is not None] or [self.processor.tokenizer.eos_token_id]

    def _grammar(self, schema: dict[str, Any]) -> Any:
        # Not sort_keys: xgrammar emits properties in the schema's order, which the prompt describes.
        key = json.dumps(schema)
        if key not in self._grammars:
            # Compact separators: the schema's length bound assumes no free whitespace.
            self._grammars[key] = self._compiler.compile_json_schema(key, any_whitespace=False)
        return self._grammars[key]

    def generate(self, requests: Sequence[ChatRequest]) -> list[Reply]:
        replies: dict[int, Reply] = {}
        order = sorted(range(len(requests)), key=lambda i: requests[i].temperature)
        # One generate call samples at one temperature, so batches never mix temperatures.
        for _, group in groupby(order, key=lambda i: requests[i].temperature):
            indices = list(group)
            for start in range(0, len(indices), self.config.batch_size):
                batch = indices[start : start + self.config.batch_size]
                try:
                    answers = self._generate_batch([requests[i] for i in batch])
                except (RuntimeError, ValueError, OSError) as exc:  # e.g. CUDA out of memory, an unreadable image
                    logger.exception("transformers engine: batch of %d failed", len(batch))
                    answers = [Reply(error=f"{type(exc).__name__}: {exc}")] * len(batch)
                replies.update(zip(batch, answers))
        return [replies[i] for i in range(len(requests))]

    @torch.inference_mode()
    def _generate_batch(self, batch: list[ChatRequest]) -> list[Reply]:
        conversations, images = [], []
        for request in batch:
            messages, request_images = to_hf_messages(request.messages)
            conversations.append(messages)
            images.extend(request_images)
        prompts = self.processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=prompts, images=images or None, padding=True, return_tensors="pt")
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.net.dtype)
        temperature = batch[0].temperature
        kwargs: dict[str, Any] = {
            "max_new_tokens": max(request.max_tokens for request in batch),
            "do_sample": temperature > 0,
            "eos_token_id": self._stop_ids,
            "pad_token_id": self.processor.tokenizer.pad_token_id,
        }
        if temperature > 0:
            kwargs["temperature"] = temperature
        if self._compiler is not None:
            import xgrammar as xgr

            # A fresh processor per call: it keeps one grammar matcher per row.
            kwargs["logits_processor"] = [xgr.contrib.hf.LogitsProcessor([self._grammar(r.schema) for r in batch])]
        output = self.net.generate(**inputs, **kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1] :].tolist()
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()  # padding excluded
        return [
            self._reply(tokens, request.max_tokens, prompt)
            for tokens, request, prompt in zip(new_tokens, batch, prompt_tokens)
        ]

    def _reply(self, tokens: list[int], max_tokens: int, prompt_tokens: int) -> Reply:
        tokens = tokens[:max_tokens]
        for position, token in enumerate(tokens):
            if token in self._stop_ids:
                tokens = tokens[: position + 1]  # the stop token was generated too
                break
        text = self.processor.tokenizer.decode(
            [token for token in tokens if token not in self._stop_ids], skip_special_tokens=True
        )
        return Reply(text=text, prompt_tokens=int(prompt_tokens), output_tokens=len(tokens))
