"""The captioning stages of the main job, on the stage interface (``curation.stage``).

A scene travels as a :class:`SceneTask`: the curated ``Scene`` (its clip in the store), then the
VLM request built from its frames, then its outcome, a row of the captions ledger
(``pipelines.ledger``): the validated shard sample, or the reason there is none. A stage that
fails on a scene gives it an outcome with the reason, and later stages pass it on untouched.
Tasks are plain Python objects; Ray Data carries them pickled, so nothing is re-parsed between stages.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from captioning import CaptionerConfig, CaptionResult, Captioner, build_joint_request
from captioning.frames import SceneInput
from captioning.prompts import load_prompts
from captioning.requests import ChatRequest
from curation.stage import Resources, Stage
from curation.shards import SampleMeta
from curation.store import local_copy
from curation.types import Scene, printable_uri

log = logging.getLogger(__name__)


@dataclass
class SceneTask:
    scene: Scene
    request: ChatRequest | None = None
    seconds_frames: float = 0.0
    # The captions ledger row (``pipelines.ledger.CAPTIONS_LEDGER`` but the stamp), once decided.
    outcome: dict[str, Any] | None = None

    def decide(self, sample: str | None, error: str | None, tries: int, seconds_caption: float = 0.0) -> None:
        self.outcome = {
            "key": self.scene.key,
            "video_id": self.scene.video_id,
            "sample": sample,
            "error": None if sample else error,
            "tries": tries,
            "seconds_frames": self.seconds_frames,
            "seconds_caption": seconds_caption,
        }


def captionable(scene: Scene) -> bool:
    return scene.status == "ok" and scene.clip_path is not None


@contextlib.contextmanager
def local_inputs(scenes: list[Scene]):
    """``SceneInput``s whose clips are local files for the duration of the block."""
    with contextlib.ExitStack() as stack:
        yield [
            SceneInput(s.key, stack.enter_context(local_copy(s.clip_path)), tuple((x.start_frame, x.end_frame) for x in s.shots))
            for s in scenes
        ]


class FramesStage(Stage):
    """Sample and encode each scene's frames into its VLM request (joint strategy).

    Done here, on CPU workers, so the captioning actors (GPUs) spend their time generating. The
    two-pass strategy builds its requests from its own first answers and so samples inside the
    captioning stage; this stage then passes its scenes on."""

    name = "frames"

    def __init__(self, config: CaptionerConfig, cpus: float = 0.5) -> None:
        super().__init__()
        self.config = config
        self.resources = Resources(cpus=cpus)

    def setup(self) -> None:
        self.prompts = load_prompts(self.config.prompt_version, self.config.prompts_dir)

    def process(self, tasks: list[SceneTask]) -> list[SceneTask]:
        if self.config.strategy != "joint":
            return tasks
        for task in tasks:
            start, error = time.perf_counter(), None
            try:
                with local_inputs([task.scene]) as (scene,):
                    task.request = build_joint_request(scene, self.config, self.prompts)
            except Exception as exc:  # an unreadable clip, spans past its end, anything else: this scene's failure
                log.warning("scene %s: no frames: %s", task.scene.key, exc)
                error = f"frames: {exc}"
            task.seconds_frames = time.perf_counter() - start
            if error is not None:
                task.decide(None, error, 0)
        return tasks


def sample_meta(scene: Scene, caption_fields: dict[str, Any]) -> SampleMeta:
    """The shard sample's JSON: the scene's source and clip geometry plus its caption keys."""
    return SampleMeta.model_validate(
        {
            "key": scene.key,
            "source": {"uri": printable_uri(scene.uri), "video_id": scene.video_id, "start_s": scene.start_s, "end_s": scene.end_s},
            "fps": scene.fps,
            "num_frames": scene.num_frames,
            "width": scene.width,
            "height": scene.height,
            "tier": scene.tier,
            **caption_fields,
        }
    )


def decide(task: SceneTask, result: CaptionResult, seconds_caption: float) -> None:
    """Give the task its outcome: the validated sample JSON, or the reason there is none."""
    sample, error = None, result.error
    if result.ok:
        try:
            sample = sample_meta(task.scene, result.sample).model_dump_json()
        except ValueError as exc:  # a sample that breaks the shard contract is never written
            error = f"sample: {exc}"
    task.decide(sample, error, result.tries, seconds_caption)


class CaptionStage(Stage):
    """The VLM, whichever engine: an actor per model copy (transformers, vllm) or client (openai)."""

    name = "caption"

    def __init__(self, config: CaptionerConfig, resources: Resources, batch_size: int, stand_in: bool = False) -> None:
        super().__init__()
        self.config, self.stand_in = config, stand_in
        self.resources, self.batch_size = resources, batch_size

    def setup(self) -> None:
        import transformers

        # A job log has no use for a progress bar per actor while weights load.
        transformers.utils.logging.disable_progress_bar()
        if self.stand_in:
            from pipelines.models import ensure_stand_in_model

            ensure_stand_in_model(self.config.model)
        self.captioner = Captioner(self.config)

    def process(self, tasks: list[SceneTask]) -> list[SceneTask]:
        todo = [task for task in tasks if task.outcome is None]
        if not todo:
            return tasks
        start = time.perf_counter()
        try:
            results = self._caption(todo)
        except Exception as exc:  # the batch's scenes fail with the reason; the job goes on
            log.warning("captioning a batch of %d scenes failed: %s: %s", len(todo), type(exc).__name__, exc)
            results = [CaptionResult(task.scene.key, error=f"caption: {type(exc).__name__}: {exc}") for task in todo]
        per_scene = (time.perf_counter() - start) / len(todo)
        for task, result in zip(todo, results, strict=True):
            decide(task, result, per_scene)
        return tasks

    def _caption(self, tasks: list[SceneTask]) -> list[CaptionResult]:
        with local_inputs([task.scene for task in tasks]) as inputs:
            if self.config.strategy == "joint":
                return self.captioner.caption_prepared(inputs, [task.request for task in tasks])
            return self.captioner.caption(inputs)
