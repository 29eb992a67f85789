"""Any OpenAI-compatible chat-completions server, over ``httpx``: concurrency, timeouts, retries."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

import httpx

from ..config import OpenAIConfig
from ..requests import ChatRequest
from .base import Reply

logger = logging.getLogger(__name__)

# Statuses worth asking again: overload, rate limits, timeouts and server faults.
_RETRY_STATUSES = {408, 409, 425, 429}


class _Retryable(Exception):
    pass


class _Fatal(Exception):
    pass


class OpenAIEngine:
    name = "openai"

    def __init__(self, model: str, config: OpenAIConfig):
        self.model = model
        self.config = config
        headers = {}
        # The key is read here and only placed in a header; it is never logged or kept elsewhere.
        api_key = os.environ.get(config.api_key_env)
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self._client = httpx.Client(
            base_url=config.base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(config.timeout_s),
            limits=httpx.Limits(max_connections=config.concurrency),
        )
        self._structured = config.structured_output != "none"
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def generate(self, requests: Sequence[ChatRequest]) -> list[Reply]:
        with ThreadPoolExecutor(max_workers=max(1, self.config.concurrency)) as pool:
            return list(pool.map(self._ask, requests))

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if self._structured:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "caption", "schema": request.schema, "strict": True},
            }
        return body

    def _ask(self, request: ChatRequest) -> Reply:
        attempts, last_error = 0, ""
        while attempts <= self.config.max_retries:
            attempts += 1
            try:
                return self._post(request, attempts)
            except _Fatal as exc:
                return Reply(error=str(exc), attempts=attempts)
            except _Retryable as exc:
                last_error = str(exc)
            if attempts <= self.config.max_retries:
                delay = min(self.config.backoff_max_s, self.config.backoff_s * 2 ** (attempts - 1))
                # Jitter keeps concurrent workers from retrying in lockstep against a struggling server.
                delay *= 1 + 0.25 * random.random()
                logger.warning("request failed (%s), attempt %d; retrying in %.2fs", last_error, attempts, delay)
                time.sleep(delay)
        return Reply(error=f"gave up after {attempts} attempts: {last_error}", attempts=attempts)

    def _post(self, request: ChatRequest, attempts: int) -> Reply:
        body = self._body(request)
        try:
            response = self._client.post("/chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timeout: {type(exc).__name__}") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"transport: {type(exc).__name__}: {exc}") from None
        if response.status_code in _RETRY_STATUSES or response.status_code >= 500:
            raise _Retryable(f"HTTP {response.status_code}")
        if response.status_code >= 400:
            if "response_format" in body and self._structured_rejected(response):
                return self._post(request, attempts)
            raise _Fatal(f"HTTP {response.status_code}: {response.text[:300]}")
        try:
            answer = response.json()
            text = answer["choices"][0]["message"]["content"] or ""
        except (ValueError, LookupError, TypeError) as exc:
            raise _Retryable(f"malformed response: {type(exc).__name__}: {exc}") from None
        usage = answer.get("usage") or {}
        return Reply(
            text=text,
            attempts=attempts,
            prompt_tokens=usage.get("prompt_tokens"),
            output_tokens=usage.get("completion_tokens"),
        )

    def _structured_rejected(self, response: httpx.Response) -> bool:
        """In ``auto`` mode, stop sending ``response_format`` to a server that refuses it.

        Such servers (``transformers serve`` among them) still answer; the captioner's validation
        and ask-again loop then does the work constrained decoding would have done.
        """
        if self.config.structured_output != "auto" or "response_format" not in response.text:
            return False
        with self._lock:
            if self._structured:
                logger.warning("server rejects response_format; continuing without structured output")
            self._structured = False
        return True
