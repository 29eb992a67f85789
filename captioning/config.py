"""Captioning configuration: plain dataclasses with defaults, buildable from a YAML/JSON mapping."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from curation.config import build_config

from .schema import Limits

EngineName = Literal["transformers", "openai", "vllm"]
Strategy = Literal["joint", "two_pass"]


@dataclass
class TransformersConfig:
    """A local Hugging Face VLM directory run in this process."""

    device: str = "auto"  # "auto" picks CUDA when available
    dtype: str = "auto"  # "auto": bfloat16 on CUDA, float32 on CPU
    batch_size: int = 4
    constrained: bool = True  # xgrammar logits masking with the answer's JSON schema
    attn_implementation: str | None = None


@dataclass
class OpenAIConfig:
    """Any OpenAI-compatible chat-completions server (vllm serve, transformers serve, SGLang)."""

    base_url: str = "http://127.0.0.1:8000/v1"
    # Name of the environment variable holding the API key; the key itself is never configured or logged.
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 8
    timeout_s: float = 300.0
    max_retries: int = 4  # transport retries per request, on top of the first attempt
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    # "auto": send response_format=json_schema and drop it if the server rejects the field.
    structured_output: Literal["auto", "json_schema", "none"] = "auto"


@dataclass
class VllmConfig:
    """vLLM in the captioning process (``vllm.LLM``)."""

    # Passed to ``vllm.LLM`` as they are (max_model_len, gpu_memory_utilization, tensor_parallel_size, ...).
    engine_kwargs: dict[str, Any] = field(default_factory=dict)
    # Scenes per ``LLM.chat`` call: enough for vLLM's continuous batching to keep the GPU busy.
    batch_size: int = 128
    # Images a prompt may carry: frames_per_shot x the most shots a scene has (13 by default), rounded up.
    max_images_per_prompt: int = 64


@dataclass
class CaptionerConfig:
    engine: EngineName = "transformers"
    # A local model directory (transformers, vllm) or the served model name (openai).
    model: str = ""
    strategy: Strategy = "joint"
    frames_per_shot: int = 4
    # Two-pass only: frames per shot shown again with the drafts in the global request.
    global_frames_per_shot: int = 1
    max_side: int = 448  # frames are shrunk so their longer side is at most this
    prompt_version: str = "v1"
    prompts_dir: str | None = None  # default: the packaged captioning/prompts
    limits: Limits = field(default_factory=Limits)
    max_tries: int = 3  # answers asked per request before the scene is recorded as failed
    max_tokens: int | None = None  # default: the schema's bound on a complete answer
    temperature: float = 0.2
    transformers: TransformersConfig = field(default_factory=TransformersConfig)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    vllm: VllmConfig = field(default_factory=VllmConfig)

    def __post_init__(self) -> None:
        if self.engine not in ("transformers", "openai", "vllm"):
            raise ValueError(f"unknown engine {self.engine!r}")
        if self.strategy not in ("joint", "two_pass"):
            raise ValueError(f"unknown strategy {self.strategy!r}")
        if self.frames_per_shot < 1 or self.global_frames_per_shot < 1 or self.max_tries < 1:
            raise ValueError("frames_per_shot, global_frames_per_shot and max_tries must be at least 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CaptionerConfig":
        """Build from a nested mapping (e.g. parsed YAML); unknown keys raise ``UnknownConfigKeys``."""
        return build_config(cls, data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def scenes_per_call(self) -> int:
        """How many scenes to hand the engine at once: its own batch (a server: one per connection)."""
        if self.engine == "transformers":
            return self.transformers.batch_size
        if self.engine == "openai":
            return self.openai.concurrency
        return self.vllm.batch_size

    def use(self, engine: str | None = None, model: str | None = None, endpoint: str | None = None) -> None:
        """Apply the command-line choices every CLI offers: ``endpoint`` (a base URL) implies the
        openai engine unless ``engine`` names another; each given value overrides the config's."""
        if endpoint:
            self.engine = "openai"
            self.openai.base_url = endpoint
        if engine:
            self.engine = engine
        if model:
            self.model = model
