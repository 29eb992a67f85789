"""The pipeline's stages as plain functions on plain rows; Ray Data only schedules them.

A video row carries ``uri``, ``video_id``, ``local_path`` (the file decoders read: the input
itself, or a staged copy of a remote one) and ``record``: the JSON of a
:class:`~pipelines.records.VideoRecord` that each curation stage fills in. A scene row carries
``key``, ``video_id`` and ``scene`` (JSON of a ``curation.types.Scene`` whose clip is on disk);
the captioning stages add ``request`` (the VLM request, JSON) and then the outcome.

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
from curation.clips import cut_clips
from curation.config import CurationConfig
from curation.filters import filter_shots, score_shots
from curation.probe import probe_video
from curation.scenes import assemble_scenes
from curation.shards import SampleMeta
from curation.shots import detect_shots
from curation.types import Scene, VideoInfo, video_id_for
from pipelines.inputs import stage_input, unstage
from pipelines.records import (
    VideoRecord,
    caption_record_path,
    scene_from_dict,
    scene_to_dict,
    video_record_path,
    work_dir,
    write_json_atomic,
)

log = logging.getLogger(__name__)

Row = dict[str, Any]


def video_row(uri: str) -> Row:
    return {"uri": uri, "video_id": video_id_for(uri), "local_path": "", "record": ""}


def _record(row: Row) -> VideoRecord:
    return VideoRecord.from_dict(json.loads(row["record"]))


def _with_record(row: Row, record: VideoRecord) -> Row:
    return {**row, "record": json.dumps(record.to_dict())}


def _decodable(info: VideoInfo, local_path: str) -> VideoInfo:
    """The info with the local file in place of the URI, for the decoders (a copy: the URI stays
    what every record and scene names)."""
    return dataclasses.replace(info, uri=local_path)


def probe_stage(row: Row, output: str, config: CurationConfig) -> Row:
    uri, start = row["uri"], time.perf_counter()
    try:
        local = stage_input(uri, work_dir(output) / "staging")
    except (OSError, ValueError) as exc:
        info = VideoInfo(row["video_id"], uri, status="failed", error=f"cannot read input: {exc}")
        local = ""
    else:
        info = probe_video(local, config.probe)
        # Identity comes from the URI the user gave, not from where the bytes were staged.
        info.uri, info.video_id = uri, row["video_id"]
        if not info.ok:
            unstage(uri, local)
    record = VideoRecord(info, [], [], {"probe": time.perf_counter() - start})
    return {**_with_record(row, record), "local_path": local}


def shots_stage(row: Row, config: CurationConfig) -> Row:
    """Shot detection, filters and scene assembly (as ``curation.run.curate_video`` composes them).

    One stage because filters read the detection's per-frame analysis, which is too large to
    pass between tasks for a long film and cheap to use where it was made.
    """
    record = _record(row)
    info = record.info
    if not info.ok:
        return row
    start = time.perf_counter()
    try:
        detection = detect_shots(_decodable(info, row["local_path"]), config.detect, threads=config.probe.decode_threads)
    except Exception as exc:  # a file that probes but breaks mid-decode fails this input, not the job
        log.exception("%s: shot detection failed", info.uri)
        info.status, info.error = "failed", f"shot detection failed: {type(exc).__name__}: {exc}"
        unstage(info.uri, row["local_path"])
    else:
        info.num_frames = detection.num_frames
        info.duration_s = detection.num_frames / info.fps
        record.shots = filter_shots(score_shots(info.video_id, detection), config.filters)
        record.scenes = assemble_scenes(info, record.shots, config.scenes)
    record.seconds["shots"] = time.perf_counter() - start
    return _with_record(row, record)


def clips_stage(row: Row, output: str, config: CurationConfig) -> Row:
    """Cut every scene's clip, then publish the video's record (so a record implies its clips)."""
    record = _record(row)
    start = time.perf_counter()
    if record.info.ok and record.scenes:
        try:
            cut_clips(
                _decodable(record.info, row["local_path"]),
                record.scenes,
                Path(output) / "clips",
                config.clips,
                threads=config.probe.decode_threads,
            )
        finally:
            unstage(record.info.uri, row["local_path"])
    elif record.info.ok:
        unstage(record.info.uri, row["local_path"])
    record.seconds["clips"] = time.perf_counter() - start
    write_json_atomic(video_record_path(output, record.info.video_id), record.to_dict())
    info = record.info
    log.info(
        "%s: %s, %d shots (%d kept), %d scenes",
        info.uri,
        "ok" if info.ok else f"failed: {info.error}",
        len(record.shots),
        sum(s.kept for s in record.shots),
        len(record.scenes),
    )
    return _with_record(row, record)


def scene_row(scene: Scene) -> Row:
    return {"key": scene.key, "video_id": scene.video_id, "scene": json.dumps(scene_to_dict(scene))}


def captionable(scene: Scene) -> bool:
    return scene.status == "ok" and scene.clip_path is not None


def scene_rows(row: Row) -> list[Row]:
    """Flat map: a curated video row -> one row per scene whose clip was written."""
    return [scene_row(s) for s in _record(row).scenes if captionable(s)]


def frames_stage(row: Row, output: str, config: CaptionerConfig) -> Row:
    """Sample and encode the scene's frames into its VLM request (joint strategy).

    Done here, on CPU workers, so the captioning actors (GPUs) spend their time generating. The
    two-pass strategy builds its requests from its own first answers and so samples inside the
    actor. A scene without readable frames is recorded as failed here and goes no further.
    """
    start = time.perf_counter()
    request = ""
    if config.strategy == "joint":
        scene = SceneInput.from_scene(scene_from_dict(json.loads(row["scene"])))
        try:
            built = build_joint_request(scene, config, load_prompts(config.prompt_version, config.prompts_dir))
        except (OSError, ValueError) as exc:  # unreadable clip or spans past its end
            log.warning("scene %s: no frames: %s", row["key"], exc)
            failed = {**row, "sample": "", "error": f"frames: {exc}", "tries": 0}
            record_stage({**failed, "seconds_frames": time.perf_counter() - start, "seconds_caption": 0.0}, output)
            return {**row, "request": "", "usable": False, "seconds_frames": 0.0}
        request = json.dumps(dataclasses.asdict(built))
    return {**row, "request": request, "usable": True, "seconds_frames": time.perf_counter() - start}


def has_request(row: Row) -> bool:
    return bool(row["usable"])


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
            "source": {"uri": scene.uri, "video_id": scene.video_id, "start_s": scene.start_s, "end_s": scene.end_s},
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
        if stand_in:
            from pipelines.models import ensure_stand_in_model

            ensure_stand_in_model(config.model)
        self.captioner = Captioner(config)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        rows = batch.to_dict("records")
        start = time.perf_counter()
        scenes = [scene_from_dict(json.loads(row["scene"])) for row in rows]
        inputs = [SceneInput.from_scene(scene) for scene in scenes]
        if self.captioner.config.strategy == "joint":
            requests = [ChatRequest(**json.loads(row["request"])) for row in rows]
            results = caption_joint(self.captioner, inputs, requests)
        else:
            results = self.captioner.caption(inputs)
        per_scene = (time.perf_counter() - start) / max(1, len(rows))
        return pd.DataFrame([outcome_row(r, s, res, per_scene) for r, s, res in zip(rows, scenes, results, strict=True)])


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
        scene = scene_from_dict(json.loads(row["scene"]))
        if row["error"]:
            result = CaptionResult(row["key"], error=f"engine: vllm: {row['error']}", tries=1)
        else:
            result = judge_answer(SceneInput.from_scene(scene), row["text"], config, info)
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
