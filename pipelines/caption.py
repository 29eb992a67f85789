"""The main job: videos -> probe -> shots -> filters -> scenes -> clips -> VLM frames -> captions -> WebDataset shards.

    python pipelines/caption.py --input IN --output OUT [--config pipelines/configs/default.yaml] [--set a.b=v ...]
    ray job submit --working-dir . -- python pipelines/caption.py --input IN --output OUT

With no cluster (no ``RAY_ADDRESS``, no ``--ray-address``) Ray starts in-process. A rerun into the
same OUTPUT skips finished work (see ``pipelines.records``) and completes the rest.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (how `ray job submit` runs it): the repository root must be importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import json
import logging
import os
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from captioning.engines import EngineUnavailable, check_engine
from captioning.schema import Limits
from curation.files import remove_partials
from curation.manifests import SCENES_SCHEMA, SHOTS_SCHEMA, VIDEOS_SCHEMA, write_manifest
from curation.run import VideoRecord
from curation.shards import shard_name
from curation.types import Scene, printable_uri, video_id_for
from pipelines.config import PipelineConfig, load_config
from pipelines.inputs import discover_inputs
from pipelines.models import stand_in_model_dir
from pipelines.packing import PackEntry, plan_shards, remove_stale, shard_task, write_planned_shard
from pipelines.records import caption_record_path, load_video_record, read_json, work_dir
from pipelines.report import render_report
from pipelines.stages import captionable, scene_row, video_row

log = logging.getLogger("pipelines.caption")

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"
# scenes.parquet as DESIGN.md lays it out, plus how many VLM answers each caption took.
PIPELINE_SCENES_SCHEMA = SCENES_SCHEMA.append(pa.field("caption_tries", pa.int64()))
# The stand-in's answers are noise, so short ones do; they also keep the offline demo quick.
STAND_IN_LIMITS = Limits(max_characters=4, global_chars=100, shot_chars=60, camera_chars=24, description_chars=40)


class JobError(RuntimeError):
    """The job itself is broken (as opposed to some inputs or scenes failing)."""


@dataclass
class WorkPlan:
    """What this run must do; everything else is already recorded in OUTPUT/work."""

    to_curate: list[str] = field(default_factory=list)
    to_caption: list[Scene] = field(default_factory=list)


def plan_work(output: str, uris: list[str], retry_failed: bool) -> WorkPlan:
    plan = WorkPlan()
    for uri in uris:
        record = load_video_record(output, video_id_for(uri))
        if record is None or (retry_failed and not record.info.ok):
            plan.to_curate.append(uri)
            continue
        for scene in record.scenes:
            if not captionable(scene):
                continue
            done = read_json(caption_record_path(output, scene.key))
            if done is None or (retry_failed and done["sample"] is None):
                plan.to_caption.append(scene)
    return plan


def resolve_model(config: PipelineConfig) -> bool:
    """Fill in the stand-in model when none is named; True when the stand-in is used."""
    captioning = config.captioning
    if captioning.model:
        return False
    if captioning.engine != "transformers":
        raise JobError(f"--model is required with the {captioning.engine} engine")
    captioning.model = str(stand_in_model_dir())
    if captioning.limits == Limits():
        captioning.limits = STAND_IN_LIMITS
    log.warning(
        "no --model given: captioning with the tiny random stand-in VLM at %s; its captions are noise. "
        "Use --model DIR, or --endpoint URL --model NAME for a served VLM.",
        captioning.model,
    )
    return True


def check_captioner(config: PipelineConfig, stand_in: bool, cluster: str | None) -> None:
    """Fail before any work when the model or server cannot serve. On a cluster the driver may
    not see what the workers see (a model directory on the GPU nodes only, a server on each
    node's loopback), so there a failed check is only a warning."""
    if stand_in:
        return
    try:
        check_engine(config.captioning)
    except EngineUnavailable as exc:
        if not cluster:
            raise JobError(str(exc)) from None
        log.warning("%s (checked from the driver; the cluster's workers may see otherwise)", exc)


def cluster_address(address: str | None) -> str | None:
    """The Ray cluster to join (``--ray-address`` or ``RAY_ADDRESS``), None for an in-process Ray."""
    return address or os.environ.get("RAY_ADDRESS") or None


def init_ray(address: str | None, num_cpus: int | None) -> bool:
    """Connect to the cluster ``address``, or start Ray in-process when it is None.

    Returns whether this call started Ray (and so should shut it down)."""
    import ray
    import ray.data

    context = ray.data.DataContext.get_current()
    # Ray Data's own progress is a 20-line block every 10 s in a log; Progress gives one line.
    context.enable_progress_bars = False
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address)
    else:
        # Workers of a local Ray import the repository even where it is not pip-installed.
        root = str(Path(__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            runtime_env={"env_vars": {"PYTHONPATH": path}},
        )
    return True


def caption_gpus(config: PipelineConfig) -> float:
    import ray

    if config.resources.caption_gpus is not None:
        return config.resources.caption_gpus
    has_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    return 1.0 if has_gpu and config.captioning.engine in ("transformers", "vllm") else 0.0


def build_dataset(output: str, plan: WorkPlan, config: PipelineConfig, stand_in: bool):
    """The streaming Ray Data graph; its rows are the published caption records, one per scene."""
    import ray.data

    from pipelines import stages

    res, curation, captioning = config.resources, config.curation, config.captioning
    parts = []
    if plan.to_curate:
        videos = ray.data.from_items([video_row(u) for u in plan.to_curate], override_num_blocks=len(plan.to_curate))
        videos = videos.map(stages.probe_stage, fn_kwargs={"output": output, "config": curation}, num_cpus=res.probe_cpus)
        videos = videos.map(stages.shots_stage, fn_kwargs={"config": curation}, num_cpus=res.shots_cpus)
        videos = videos.map(stages.clips_stage, fn_kwargs={"output": output, "config": curation}, num_cpus=res.clips_cpus)
        parts.append(videos.flat_map(stages.scene_rows, num_cpus=res.record_cpus))
    if plan.to_caption:
        parts.append(ray.data.from_items([scene_row(s) for s in plan.to_caption]))
    scenes = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    scenes = scenes.flat_map(
        stages.frames_stage, fn_kwargs={"output": output, "config": captioning}, num_cpus=res.frames_cpus
    )
    if captioning.engine == "vllm":
        captioned = stages.vllm_caption(scenes, captioning)
    else:
        captioned = scenes.map_batches(
            stages.CaptionStage,
            fn_constructor_kwargs={"config": captioning, "stand_in": stand_in},
            batch_size=res.caption_batch_size,
            batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=res.caption_actors),
            num_cpus=res.caption_cpus,
            num_gpus=caption_gpus(config),
        )
    return captioned.map(stages.record_stage, fn_kwargs={"output": output}, num_cpus=res.record_cpus)


class Progress:
    """One log line every ``interval_s`` seconds while the job runs: videos curated (their
    records, counted on disk) and scenes captioned (the rows the driver receives)."""

    def __init__(self, output: str, videos: int, interval_s: float = 15.0) -> None:
        self.records = work_dir(output) / "videos"
        self.videos, self.interval_s = videos, interval_s
        self.captioned = self.failed = 0
        self.start = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def scene_done(self, ok: bool) -> None:
        self.captioned += ok
        self.failed += not ok

    def _curated(self) -> int:
        if not self.records.is_dir():
            return 0
        return sum(1 for entry in os.scandir(self.records) if entry.stat().st_mtime >= self.start)

    def log_line(self) -> None:
        log.info(
            "progress: %d/%d videos curated, %d scenes captioned, %d failed, %.0f s",
            min(self._curated(), self.videos), self.videos, self.captioned, self.failed, time.time() - self.start,
        )

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.log_line()

    def __enter__(self) -> "Progress":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.log_line()


def reason_of(error: str) -> str:
    """The kind of a failure, for counting: the message up to its details."""
    return error.split(":")[0].split(" (")[0].strip()


def pack(output: str, samples: list[tuple[dict[str, Any], str]], config: PipelineConfig) -> tuple[dict[str, str], int]:
    """Pack the samples into shards, rewriting only changed ones; returns key -> shard name and
    how many shards were written."""
    import ray.data

    entries = [
        PackEntry(sample["key"], clip, Path(clip).stat().st_size + caption_record_path(output, sample["key"]).stat().st_size)
        for sample, clip in samples
    ]
    plan = plan_shards(entries, config.shards)
    remove_stale(output, len(plan))
    written = 0
    if plan:
        tasks = ray.data.from_items([shard_task(i, e) for i, e in enumerate(plan)], override_num_blocks=len(plan))
        results = tasks.map(write_planned_shard, fn_kwargs={"output": output}, num_cpus=config.resources.shards_cpus)
        written = sum(row["written"] for row in results.take_all())
    log.info("shards: %d planned, %d written, %d already complete", len(plan), written, len(plan) - written)
    return {entry.key: shard_name(i) for i, shard in enumerate(plan) for entry in shard}, written


def finish(output: str, uris: list[str], config: PipelineConfig, plan: WorkPlan, start: float) -> dict[str, Any]:
    """Shards, manifests, summary and report from every record of these inputs; ``plan`` and
    ``start`` (a ``time.perf_counter()``) describe this run for the summary."""
    records: list[VideoRecord] = []
    for uri in uris:
        record = load_video_record(output, video_id_for(uri))
        if record is None:
            raise JobError(f"{uri}: no curation record after the run")
        records.append(record)
    samples: list[tuple[dict[str, Any], str]] = []
    captions: dict[str, dict[str, Any]] = {}
    for record in records:
        for scene in record.scenes:
            if not captionable(scene):
                continue
            caption = read_json(caption_record_path(output, scene.key))
            if caption is None:
                raise JobError(f"scene {scene.key}: no caption record after the run")
            captions[scene.key] = caption
            if caption["sample"] is not None:
                samples.append((caption["sample"], scene.clip_path))
    samples.sort(key=lambda item: item[0]["key"])
    shard_of, shards_written = pack(output, samples, config)

    scene_rows, scene_failures = [], []
    for record in records:
        for scene in record.scenes:
            row = scene.to_row()
            caption = captions.get(scene.key)
            if caption is not None:
                row["caption_tries"] = caption["tries"]
                if caption["sample"] is None:
                    row["status"], row["error"] = "failed", f"caption: {caption['error']}"
            row["shard"] = shard_of.get(scene.key)
            if row["status"] != "ok":
                scene_failures.append((scene.key, row["error"]))
            scene_rows.append(row)
    manifests = Path(output) / "manifests"
    write_manifest([r.info.to_row() for r in records], manifests / "videos.parquet", VIDEOS_SCHEMA)
    write_manifest([s.to_row() for r in records for s in r.shots], manifests / "shots.parquet", SHOTS_SCHEMA)
    write_manifest(scene_rows, manifests / "scenes.parquet", PIPELINE_SCENES_SCHEMA)

    curated_now = {video_id_for(uri) for uri in plan.to_curate}
    captioned_now = {scene.key for scene in plan.to_caption}
    attempted = [c for c in captions.values() if c["video_id"] in curated_now or c["key"] in captioned_now]
    failed_inputs = {printable_uri(r.info.uri): r.info.error for r in records if not r.info.ok}
    seconds: Counter[str] = Counter()  # every run's work on these inputs
    seconds_now: Counter[str] = Counter()  # this run's
    for record in records:
        seconds.update(record.seconds)
        if record.info.video_id in curated_now:
            seconds_now.update(record.seconds)
    for caption in captions.values():
        seconds.update(caption["seconds"])
    for caption in attempted:
        seconds_now.update(caption["seconds"])
    summary = {
        "inputs": len(records),
        "inputs_ok": len(records) - len(failed_inputs),
        "inputs_failed": len(failed_inputs),
        "failures_by_reason": dict(Counter(reason_of(e) for e in failed_inputs.values())),
        "failed_inputs": failed_inputs,
        "scenes": len(scene_rows),
        "samples": len(samples),
        "scenes_by_tier": dict(Counter(sample.get("tier", "") for sample, _ in samples)),
        "scenes_failed": len(scene_failures),
        "scene_failures_by_reason": dict(Counter(reason_of(e) for _, e in scene_failures)),
        "shards": len(set(shard_of.values())),
        "hours_in": sum(r.info.duration_s for r in records if r.info.ok) / 3600,
        # Tiers are cut independently, so the same footage can be in a 5 s and a 15 s scene:
        # hours out can exceed hours in.
        "hours_out": sum(s["num_frames"] / s["fps"] for s, _ in samples) / 3600,
        "hours_out_by_tier": {
            tier: sum(s["num_frames"] / s["fps"] for s, _ in samples if s.get("tier") == tier) / 3600
            for tier in sorted({s.get("tier", "") for s, _ in samples})
        },
        "stage_seconds": dict(seconds),
        "captioner": samples[0][0]["captioner"] if samples else {},
        "this_run": {
            "videos_curated": len(plan.to_curate),
            "videos_failed": sum(1 for r in records if r.info.video_id in curated_now and not r.info.ok),
            "stage_seconds": dict(seconds_now),
            "scenes_captioned": sum(c["sample"] is not None for c in attempted),
            "scenes_failed": sum(c["sample"] is None for c in attempted),
            "shards_written": shards_written,
            "wall_time_s": time.perf_counter() - start,
        },
    }
    (Path(output) / "summary.json").write_text(json.dumps(summary, indent=2))
    failures = sorted(failed_inputs.items()) + scene_failures
    render_report(Path(output) / "report.html", samples, failures, summary, config.report)
    return summary


def summary_table(summary: dict[str, Any]) -> str:
    run = summary["this_run"]
    total, now = summary["stage_seconds"], run["stage_seconds"]
    by_tier = ", ".join(f"{tier} {hours:.4f}" for tier, hours in summary["hours_out_by_tier"].items())
    lines = [
        f"{'stage':<10}{'this run (s)':>14}{'all runs (s)':>14}",
        *(
            f"{name:<10}{now.get(name, 0.0):>14.1f}{total.get(name, 0.0):>14.1f}"
            for name in ("probe", "shots", "clips", "frames", "caption")
        ),
        "",
        f"inputs {summary['inputs']} ({summary['inputs_failed']} failed: {summary['failures_by_reason']})",
        f"scenes {summary['scenes']}: {summary['samples']} in {summary['shards']} shards "
        f"{summary['scenes_by_tier']}, {summary['scenes_failed']} failed {summary['scene_failures_by_reason']}",
        f"hours in {summary['hours_in']:.4f}; out {summary['hours_out']:.4f} ({by_tier}; "
        "tiers are cut independently, so footage can be in scenes of several tiers)",
        f"this run: {run['videos_curated']} videos curated ({run['videos_failed']} failed), "
        f"{run['scenes_captioned']} scenes captioned ({run['scenes_failed']} failed) in {run['wall_time_s']:.1f} s",
    ]
    return "\n".join(lines)


def run(
    source: str,
    output: str,
    config: PipelineConfig,
    limit: int | None = None,
    ray_address: str | None = None,
    num_cpus: int | None = None,
) -> dict[str, Any]:
    """Run the job; returns the summary. Raises ``JobError`` (or anything Ray raises) when broken."""
    start = time.perf_counter()
    output = os.path.abspath(output)
    uris = discover_inputs(source, limit)
    if not uris:
        raise JobError(f"no videos found at {source}")
    if config.captioning.engine == "vllm" and config.captioning.strategy != "joint":
        raise JobError("the vllm engine runs the joint strategy only")
    stand_in = resolve_model(config)
    address = cluster_address(ray_address)
    check_captioner(config, stand_in, address)
    plan = plan_work(output, uris, config.retry_failed)
    log.info(
        "%d inputs: %d to curate, %d more scenes to caption, the rest done in an earlier run",
        len(uris), len(plan.to_curate), len(plan.to_caption),
    )
    # Temporary files and staged copies of a killed run (its stragglers, if any, write under
    # other names and fail harmlessly when theirs are gone).
    remove_partials(output)
    shutil.rmtree(work_dir(output) / "staging", ignore_errors=True)
    started_ray = init_ray(address, num_cpus)
    try:
        if plan.to_curate or plan.to_caption:
            with Progress(output, len(plan.to_curate)) as progress:
                for row in build_dataset(output, plan, config, stand_in).iter_rows():
                    progress.scene_done(row["ok"])
                    if not row["ok"]:
                        log.warning("scene %s failed: %s", row["key"], row["error"])
        summary = finish(output, uris, config, plan, start)
    finally:
        if started_ray:
            import ray

            ray.shutdown()
    staging = work_dir(output) / "staging"
    if staging.is_dir() and not any(staging.iterdir()):
        staging.rmdir()
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True,
                        help="videos: a folder (searched recursively), a file, a glob, or a URI such as "
                             "s3://bucket/prefix/; an existing path is taken literally (required)")
    parser.add_argument("--output", required=True,
                        help="output folder, local or on a shared file system; a rerun into it resumes (required)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="pipeline YAML (default: %(default)s)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. curation.clips.width=416 (repeatable; default: none)")
    parser.add_argument("--engine", choices=["transformers", "openai", "vllm"],
                        help="captioning engine (default: the config's, transformers; openai with --endpoint)")
    parser.add_argument("--model",
                        help="model directory (transformers, vllm) or served model name (openai) "
                             "(default: the config's; none: a tiny random stand-in VLM whose captions are noise)")
    parser.add_argument("--endpoint", metavar="URL",
                        help="OpenAI-compatible base URL, e.g. http://host:8000/v1; implies --engine openai "
                             "(default: none)")
    parser.add_argument("--limit", type=int, help="process only the first N inputs in sorted order (default: all)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="curate and caption again what failed in an earlier run (default: failures stay failed)")
    parser.add_argument("--ray-address",
                        help="Ray cluster to join (default: $RAY_ADDRESS, else Ray starts inside this process)")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the in-process Ray (default: all of this machine's)")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default: %(default)s)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = load_config(args.config, args.set)
    config.captioning.use(engine=args.engine, model=args.model, endpoint=args.endpoint)
    if args.retry_failed:
        config.retry_failed = True
    try:
        summary = run(args.input, args.output, config, args.limit, args.ray_address, args.num_cpus)
    except (JobError, FileNotFoundError) as exc:  # a setup the job cannot run with: one line says why
        log.error("%s", exc)
        return 1
    except Exception:
        log.exception("the job failed")
        return 1
    print(summary_table(summary))
    run_stats = summary["this_run"]
    if run_stats["scenes_failed"] and not run_stats["scenes_captioned"]:
        log.error("no scene of this run could be captioned: the captioning setup is broken")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
