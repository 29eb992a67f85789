"""``Captioner(config).caption(scenes)``: strategies, validation and the ask-again loop.

Request building is a plain function (:func:`build_joint_request`), so the pipeline builds requests
on CPU workers and hands them to :meth:`Captioner.caption_prepared` on the GPU workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Generic, Sequence, TypeVar

from .config import CaptionerConfig
from .engines import make_engine
from .engines.base import Engine
from .frames import SceneInput, SceneLike, as_scene_input, sample_indices, shot_frame_urls
from .prompts import PromptSet, load_prompts
from .render import sample_fields
from .requests import ChatRequest, global_request, joint_request, retry_request, shot_request
from .schema import Caption, CaptionError, ShotDraft, parse_caption, parse_shot_draft

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class CaptionResult:
    """One scene's outcome: a validated caption and its shard fields, or why there is none."""

    key: str
    caption: Caption | None = None
    # The shard sample's caption keys (global_caption, characters, shots, shot_cut_frames, prompt, captioner).
    sample: dict[str, Any] | None = None
    error: str | None = None
    tries: int = 0  # VLM answers requested for this scene, first tries and retries together

    @property
    def ok(self) -> bool:
        return self.caption is not None

    @property
    def prompt(self) -> str | None:
        return self.sample["prompt"] if self.sample else None


def build_joint_request(scene: SceneInput, config: CaptionerConfig, prompts: PromptSet) -> ChatRequest:
    """The joint strategy's single request for ``scene`` (decodes its frames)."""
    urls = shot_frame_urls(scene, config.frames_per_shot, config.max_side)
    return joint_request(urls, prompts, config.limits, config.max_tokens, config.temperature)


@dataclass
class _Job(Generic[T]):
    """One question to the VLM, asked again with the validation error until it passes."""

    scene: int  # index into the batch of scenes
    label: str  # for logs: the scene key, and the shot in the two-pass first pass
    request: ChatRequest
    parse: Callable[[str], T]
    asked: int = 0  # answers requested for this job
    earlier_tries: int = 0  # answers the scene needed before this job (two-pass: the shot pass)
    value: T | None = None
    error: str | None = None

    @property
    def tries(self) -> int:
        return self.earlier_tries + self.asked


class Captioner:
    def __init__(self, config: CaptionerConfig, engine: Engine | None = None):
        self.config = config
        self.prompts = load_prompts(config.prompt_version, config.prompts_dir)
        self.engine = engine if engine is not None else make_engine(config)

    @property
    def info(self) -> dict[str, str]:
        """The shard sample's ``captioner`` record."""
        return {
            "engine": self.engine.name,
            "model": self.engine.model,
            "prompt_version": self.prompts.version,
            "strategy": self.config.strategy,
        }

    def caption(self, scenes: Sequence[SceneLike]) -> list[CaptionResult]:
        """Caption a batch of scenes; one result per scene, in order, failures included."""
        inputs: dict[int, SceneInput] = {}
        results: list[CaptionResult | None] = [None] * len(scenes)
        frames: dict[int, list[list[str]]] = {}
        for i, scene in enumerate(scenes):
            try:
                inputs[i] = as_scene_input(scene)
                frames[i] = shot_frame_urls(inputs[i], self.config.frames_per_shot, self.config.max_side)
            except (OSError, ValueError) as exc:  # no clip, bad spans, unreadable video (av raises OSError)
                logger.warning("scene %s: no frames: %s", scene.key, exc)
                results[i] = CaptionResult(scene.key, error=f"frames: {exc}")
        if self.config.strategy == "joint":
            jobs = self._joint_jobs(inputs, frames)
        else:
            jobs = self._draft_pass(inputs, frames, results)
        self._run(jobs)
        for job in jobs:
            results[job.scene] = self._result(inputs[job.scene], job)
        return [result for result in results if result is not None]

    def caption_prepared(self, scenes: Sequence[SceneInput], requests: Sequence[ChatRequest]) -> list[CaptionResult]:
        """The joint strategy on requests already built (the pipeline builds them on CPU workers)."""
        jobs = [
            _Job(i, scene.key, request, self._caption_parser(len(scene.shots)))
            for i, (scene, request) in enumerate(zip(scenes, requests, strict=True))
        ]
        self._run(jobs)
        return [self._result(scenes[job.scene], job) for job in jobs]

    def _joint_jobs(self, inputs: dict[int, SceneInput], frames: dict[int, list[list[str]]]) -> list[_Job[Caption]]:
        c = self.config
        return [
            _Job(
                i,
                inputs[i].key,
                joint_request(urls, self.prompts, c.limits, c.max_tokens, c.temperature),
                self._caption_parser(len(inputs[i].shots)),
            )
            for i, urls in frames.items()
        ]

    def _draft_pass(
        self,
        inputs: dict[int, SceneInput],
        frames: dict[int, list[list[str]]],
        results: list[CaptionResult | None],
    ) -> list[_Job[Caption]]:
        """Two-pass: describe every shot; return the global jobs of the scenes whose every shot passed.

        Scenes with a shot that never validated get their failed result here.
        """
        c = self.config
        shot_jobs: list[_Job[ShotDraft]] = [
            _Job(
                i,
                f"{inputs[i].key} shot {n + 1}",
                shot_request(urls, n + 1, len(shots), self.prompts, c.limits, c.max_tokens, c.temperature),
                lambda text: parse_shot_draft(text, c.limits),
            )
            for i, shots in frames.items()
            for n, urls in enumerate(shots)
        ]
        self._run(shot_jobs)
        global_jobs = []
        for i, shots in frames.items():
            mine = [job for job in shot_jobs if job.scene == i]
            tries = sum(job.tries for job in mine)
            failed = next((job for job in mine if job.value is None), None)
            if failed is not None:
                shot_number = mine.index(failed) + 1
                results[i] = CaptionResult(inputs[i].key, error=f"shot {shot_number}: {failed.error}", tries=tries)
                continue
            few = [[urls[j] for j in sample_indices(0, len(urls), c.global_frames_per_shot)] for urls in shots]
            request = global_request(
                [job.value for job in mine], few, self.prompts, c.limits, c.max_tokens, c.temperature
            )
            global_jobs.append(
                _Job(i, inputs[i].key, request, self._caption_parser(len(shots)), earlier_tries=tries)
            )
        return global_jobs

    def _caption_parser(self, num_shots: int) -> Callable[[str], Caption]:
        return lambda text: parse_caption(text, num_shots, self.config.limits)

    def _run(self, jobs: Sequence[_Job]) -> None:
        """Ask every job's question in batched rounds until it validates, fails, or runs out of tries."""
        pending = list(jobs)
        while pending:
            replies = self.engine.generate([job.request for job in pending])
            retry = []
            for job, reply in zip(pending, replies, strict=True):
                job.asked += 1
                if reply.error is not None:
                    # The engine already retried the transport; asking again would repeat that.
                    job.error = f"engine: {reply.error}"
                    logger.warning("%s: %s", job.label, job.error)
                    continue
                try:
                    job.value = job.parse(reply.text or "")
                except CaptionError as exc:
                    if job.asked >= self.config.max_tries:
                        job.error = f"rejected {job.asked} answers; last: {exc}"
                    else:
                        logger.info("%s: answer rejected, asking again: %s", job.label, exc)
                        job.request = retry_request(job.request, reply.text or "", str(exc), self.prompts)
                        retry.append(job)
            pending = retry

    def _result(self, scene: SceneInput, job: _Job[Caption]) -> CaptionResult:
        if job.value is None:
            return CaptionResult(scene.key, error=job.error, tries=job.tries)
        return CaptionResult(scene.key, job.value, sample_fields(job.value, scene.shots, self.info), tries=job.tries)
