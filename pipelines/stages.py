"""The pipeline's stages as plain functions on plain rows; Ray Data only schedules them.

A video row carries ``uri`` (the input's name as bytes: Arrow holds any bytes, but no string
with the surrogates that stand for a name's non-UTF-8 bytes), ``video_id``, ``staged`` (a local
copy of a remote input, else empty) and ``record``: the JSON of a
:class:`~curation.run.VideoRecord` that the curation steps fill in. Those steps turn any
exception into the video's failure. A scene row carries ``key``, ``video_id`` and ``scene``
(JSON of a ``curation.types.Scene`` whose clip is on disk); the captioning stages add
``request`` (the VLM request, JSON) and then the outcome; their exceptions become the scene's
failure.

Nested data travels as JSON strings because Arrow would coerce ragged dicts and lists into structs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from captioning import CaptionerConfig, CaptionResult, Captioner, build_joint_request, judge_answer
from captioning.frames import SceneInput
from captioning.prompts import load_prompts
from captioning.requests import ChatRequest, retry_request
from curation.config import CurationConfig
from curation.run import VideoRecord, clips_step, log_outcome, probe_step, scenes_step
from curation.shards import SampleMeta
from curation.types import Scene, VideoInfo, printable_uri, uri_bytes, uri_from_bytes, video_id_for
from pipelines.inputs import stage_input, unstage
from pipelines.records import caption_record_path, video_record_path, work_dir, write_json_atomic

log = logging.getLogger(__name__)

Row = dict[str, Any]


def video_row(uri: str) -> Row:
    return {"uri": uri_bytes(uri), "video_id": video_id_for(uri), "staged": "", "record": ""}


def _record(row: Row) -> VideoRecord:
    return VideoRecord.from_dict(json.loads(row["record"]))


def _with_record(row: Row, record: VideoRecord) -> Row:
    return {**row, "record": json.dumps(record.to_dict())}


def _source(row: Row) -> str:
    """The local file the decoders read: the staged copy, or the input itself."""
    return row["staged"] or uri_from_bytes(row["uri"])


def probe_stage(row: Row, output: str, config: CurationConfig) -> Row:
    uri, start = uri_from_bytes(row["uri"]), time.perf_counter()
    try:
        staged = stage_input(uri, work_dir(output) / "staging")
    except Exception as exc:
        record = VideoRecord(VideoInfo(row["video_id"], uri, status="failed", error=f"cannot read input: {exc}"))
        record.seconds["probe"] = time.perf_counter() - start
        return _with_record(row, record)
    row = {**row, "staged": "" if staged == uri else staged}
    record = probe_step(uri, _source(row), config)
    if not record.info.ok:
        unstage(uri, staged)
    return _with_record(row, record)


def shots_stage(row: Row, config: CurationConfig) -> Row:
    """Shot detection, filters and scene assembly (``curation.run.scenes_step``)."""
    record = _record(row)
    if not record.info.ok:
        return row
    scenes_step(record, _source(row), config)
    if not record.info.ok:
        unstage(record.info.uri, _source(row))
    return _with_record(row, record)


def clips_stage(row: Row, output: str, config: CurationConfig) -> Row:
    """Cut every scene's clip, then publish the video's record (so a record implies its clips)."""
    record = _record(row)
    try:
        clips_step(record, _source(row), Path(output) / "clips", config)
    finally:
        if record.info.ok:
            unstage(record.info.uri, _source(row))
    write_json_atomic(video_record_path(output, record.info.video_id), record.to_dict())
    log_outcome(record)
    return _with_record(row, record)


def scene_row(scene: Scene) -> Row:
    return {"key": scene.key, "video_id": scene.video_id, "scene": json.dumps(dataclasses.asdict(scene))}


def captionable(scene: Scene) -> bool:
    return scene.status == "ok" and scene.clip_path is not None


def scene_rows(row: Row) -> list[Row]:
    """Flat map: a curated video row -> one row per scene whose clip was written."""
    return [scene_row(s) for s in _record(row).scenes if captionable(s)]


def frames_stage(row: Row, output: str, config: CaptionerConfig) -> list[Row]:
    """Sample and encode the scene's frames into its VLM request (joint strategy); a flat map.

    Done here, on CPU workers, so the captioning actors (GPUs) spend their time generating. The
    two-pass strategy builds its requests from its own first answers and so samples inside the
    actor. A scene without readable frames is recorded as failed here and goes no further.
    """
    start = time.perf_counter()
    request = ""
    if config.strategy == "joint":
        try:
            scene = SceneInput.from_scene(Scene.from_dict(json.loads(row["scene"])))
            built = build_joint_request(scene, config, load_prompts(config.prompt_version, config.prompts_dir))
        except Exception as exc:  # an unreadable clip, spans past its end, anything else: this scene's failure
            log.warning("scene %s: no frames: %s", row["key"], exc)
            failed = {**row, "sample": "", "error": f"frames: {exc}", "tries": 0}
            record_stage({**failed, "seconds_frames": time.perf_counter() - start, "seconds_caption": 0.0}, output)
            return []
        request = json.dumps(dataclasses.asdict(built))
    return [{**row, "request": request, "seconds_frames": time.perf_counter() - start}]


def caption_joint(captioner: Captioner, scenes: list[SceneInput], requests: list[ChatRequest]) -> list[CaptionResult]:
    """Ask each request until its answer validates or ``max_tries`` answers were rejected."""
    config = captioner.config
    results: list[CaptionResult | None] = [None] * len(scenes)
    tries = [0] * len(scenes)
    pending = list(range(len(scenes)))
    while pending:
        replies = captioner.engine.generate([requests[i] for i in pending])
        again = []
        for i, reply in zip(pending, replies, strict=True):
            tries[i] += 1
            if reply.error is not None:
                # The engine already retried its transport; asking again would only repeat that.
                results[i] = CaptionResult(scenes[i].key, error=f"engine: {reply.error}", tries=tries[i])
                continue
            result = judge_answer(scenes[i], reply.text or "", config, captioner.info, tries[i])
            if result.ok:
                results[i] = result
            elif tries[i] >= config.max_tries:
                # Worded as the Captioner words it, so manifests read alike whichever path captioned.
                results[i] = CaptionResult(scenes[i].key, error=f"rejected {tries[i]} answers; last: {result.error}", tries=tries[i])
            else:
                requests[i] = retry_request(requests[i], reply.text or "", result.error, captioner.prompts)
                again.append(i)
        pending = again
    return results


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


def outcome_row(row: Row, scene: Scene, result: CaptionResult, seconds_caption: float) -> Row:
    """A captioned scene row: the validated sample JSON, or the reason there is none."""
    sample, error = "", result.error or ""
    if result.ok:
        try:
            sample = sample_meta(scene, result.sample).model_dump_json()
        except ValueError as exc:  # a sample that breaks the shard contract is never written
            error = f"sample: {exc}"
    return {
        "key": row["key"],
        "video_id": row["video_id"],
        "sample": sample,
        "error": "" if sample else error,
        "tries": result.tries,
        "seconds_frames": row["seconds_frames"],
        "seconds_caption": seconds_caption,
    }


class CaptionStage:
    """The VLM stage (transformers, openai): an actor holding one engine, a model copy or a client."""

    def __init__(self, config: CaptionerConfig, stand_in: bool = False) -> None:
        import transformers

        # A job log has no use for a progress bar per actor while weights load.
        transformers.utils.logging.disable_progress_bar()
        if stand_in:
            from pipelines.models import ensure_stand_in_model

            ensure_stand_in_model(config.model)
        self.captioner = Captioner(config)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = batch.to_dict("records")
        start = time.perf_counter()
        scenes = [Scene.from_dict(json.loads(row["scene"])) for row in rows]
        try:
            results = self._caption(rows, scenes)
        except Exception as exc:  # the batch's scenes fail with the reason; the job goes on
            log.warning("captioning a batch of %d scenes failed: %s: %s", len(rows), type(exc).__name__, exc)
            results = [CaptionResult(scene.key, error=f"caption: {type(exc).__name__}: {exc}") for scene in scenes]
        per_scene = (time.perf_counter() - start) / max(1, len(rows))
        return pd.DataFrame([outcome_row(r, s, res, per_scene) for r, s, res in zip(rows, scenes, results, strict=True)])

    def _caption(self, rows: list[Row], scenes: list[Scene]) -> list[CaptionResult]:
        inputs = [SceneInput.from_scene(scene) for scene in scenes]
        if self.captioner.config.strategy == "joint":
            requests = [ChatRequest(**json.loads(row["request"])) for row in rows]
            return caption_joint(self.captioner, inputs, requests)
        return self.captioner.caption(inputs)


def vllm_caption(scenes: Any, config: CaptionerConfig) -> Any:
    """The VLM stage on vLLM: ``ray.data.llm``'s processor between our request and judge rows."""
    from ray.data.llm import build_processor

    from captioning.engines import vllm_engine

    carried = ("key", "video_id", "scene", "seconds_frames")
    info = {
        "engine": "vllm",
        "model": config.model,
        "prompt_version": load_prompts(config.prompt_version, config.prompts_dir).version,
        "strategy": config.strategy,
    }

    def preprocess(row: Row) -> Row:
        request = vllm_engine.request_row(ChatRequest(**json.loads(row["request"])), 0)
        return {**vllm_engine.preprocess(request), **{name: row[name] for name in carried}}

    def postprocess(row: Row) -> Row:
        return {**vllm_engine.postprocess(row), **{name: row[name] for name in carried}}

    def judge(row: Row) -> Row:
        start = time.perf_counter()
        scene = Scene.from_dict(json.loads(row["scene"]))
        if row["error"]:
            result = CaptionResult(row["key"], error=f"engine: vllm: {row['error']}", tries=1)
        else:
            try:
                result = judge_answer(SceneInput.from_scene(scene), row["text"], config, info)
            except Exception as exc:
                result = CaptionResult(row["key"], error=f"caption: {type(exc).__name__}: {exc}", tries=1)
        return outcome_row(row, scene, result, time.perf_counter() - start)

    engine = vllm_engine.VllmEngine(config.model, config.vllm)
    processor = build_processor(engine.processor_config(), preprocess=preprocess, postprocess=postprocess)
    return processor(scenes).map(judge)


def record_stage(row: Row, output: str) -> Row:
    """Publish the scene's caption outcome; from now on a rerun leaves this scene alone."""
    record = {
        "key": row["key"],
        "video_id": row["video_id"],
        "sample": json.loads(row["sample"]) if row["sample"] else None,
        "error": row["error"] or None,
        "tries": int(row["tries"]),
        "seconds": {"frames": float(row["seconds_frames"]), "caption": float(row["seconds_caption"])},
    }
    write_json_atomic(caption_record_path(output, row["key"]), record)
    return {"key": row["key"], "ok": record["sample"] is not None, "error": row["error"]}
