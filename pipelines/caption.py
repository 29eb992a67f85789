"""The main job: videos -> probe -> shots -> filters -> scenes -> clips -> VLM frames -> captions -> WebDataset shards.

    python pipelines/caption.py --input IN --output OUT [--config pipelines/configs/default.yaml] [--set a.b=v ...]
    ray job submit --working-dir . -- python pipelines/caption.py --input IN --output OUT

With no cluster (no ``RAY_ADDRESS``, no ``--ray-address``) Ray starts in-process. A rerun into the
same OUTPUT skips finished work (see ``pipelines.ledger``) and completes the rest.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script (how `ray job submit` runs it): the repository root must be importable.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from captioning.engines import EngineUnavailable, check_engine
from captioning.schema import Limits
from curation.inputs import discover_inputs
from curation.run import CurateStage, VideoTask
from curation.stage import Resources
from curation.store import Store
from pipelines.bookkeeping import JobError, WorkPlan, finish, plan_work
from pipelines.config import PipelineConfig, load_config
from pipelines.ledger import Ledger, PartWriter
from pipelines.models import stand_in_model_dir
from pipelines.packing import write_on_ray
from pipelines.scheduling import from_tasks, rows, schedule, task_of, tasks_of
from pipelines.stages import CaptionStage, FramesStage, SceneTask, captionable

log = logging.getLogger("pipelines.caption")

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "default.yaml"
# The stand-in's answers are noise, so short ones do; they also keep the offline demo quick.
STAND_IN_LIMITS = Limits(max_characters=4, global_chars=100, shot_chars=60, camera_chars=24, description_chars=40)


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


@dataclass
class RayConnection:
    """Ray, joined or started the first time the job needs it (a rerun with nothing to do never does)."""

    address: str | None
    num_cpus: int | None
    started: bool = False

    def __call__(self) -> None:
        self.started = init_ray(self.address, self.num_cpus) or self.started

    def close(self) -> None:
        if self.started:
            import ray

            ray.shutdown()


def init_ray(address: str | None, num_cpus: int | None) -> bool:
    """Connect to the cluster ``address``, or start Ray in-process when it is None.

    Returns whether this call started Ray (and so should shut it down)."""
    import ray
    import ray.data

    if ray.is_initialized():
        return False
    context = ray.data.DataContext.get_current()
    # Ray Data's own progress is a 20-line block every 10 s in a log; Progress gives one line.
    context.enable_progress_bars = False
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)
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


def record_videos(batch: dict[str, Any], writer: Any) -> dict[str, list[Any]]:
    """Send curated videos to the ledger's writer (a ``PartWriter`` actor); pass on their captionable scenes."""
    import ray

    records = [task.record for task in tasks_of(batch)]
    ray.get(writer.add.remote(records))
    return rows([SceneTask(scene) for record in records for scene in record.scenes if captionable(scene)])


def build_dataset(output: str, plan: WorkPlan, config: PipelineConfig, stand_in: bool, writer: Any) -> Any:
    """The streaming Ray Data graph; its rows are the scenes' tasks with their outcomes."""

    res, captioning = config.resources, config.captioning
    parts = []
    if plan.to_curate:
        videos = from_tasks([VideoTask(uri) for uri in plan.to_curate], blocks=len(plan.to_curate))
        videos = schedule(videos, CurateStage(config.curation, Store(output).uri("clips"), cpus=res.curate_cpus))
        parts.append(videos.map_batches(record_videos, fn_kwargs={"writer": writer}, batch_size=1, num_cpus=res.record_cpus))
    if plan.to_caption:
        parts.append(from_tasks([SceneTask(scene) for scene in plan.to_caption]))
    scenes = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    scenes = schedule(scenes, FramesStage(captioning, cpus=res.frames_cpus))
    resources = Resources(cpus=res.caption_cpus, gpus=caption_gpus(config), actors=res.caption_actors)
    batch_size = res.caption_batch_size or captioning.scenes_per_call()
    return schedule(scenes, CaptionStage(captioning, resources, batch_size, stand_in))


class Progress:
    """One log line every ``interval_s`` seconds while the job runs: videos curated (the count of
    the ledger's video writer) and scenes captioned (the rows the driver receives)."""

    def __init__(self, videos: int, writer: Any | None, interval_s: float = 15.0) -> None:
        self.videos, self.writer, self.interval_s = videos, writer, interval_s
        self.captioned = self.failed = 0
        self.start = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def scene_done(self, ok: bool) -> None:
        self.captioned += ok
        self.failed += not ok

    def log_line(self) -> None:
        import ray

        curated = ray.get(self.writer.added.remote()) if self.writer is not None else 0
        log.info(
            "progress: %d/%d videos curated, %d scenes captioned, %d failed, %.0f s",
            curated, self.videos, self.captioned, self.failed, time.time() - self.start,
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


def caption_all(output: str, plan: WorkPlan, config: PipelineConfig, stand_in: bool) -> None:
    """Run the graph and record finished work in the ledger a part at a time (``PartWriter``):
    each scene's outcome here, as the driver receives it; each curated video in an actor that the
    curation tasks send their records to once their clips are stored."""
    import ray

    ledger = Ledger(Store(output))
    videos = ray.remote(PartWriter).options(num_cpus=0).remote(ledger.write_videos) if plan.to_curate else None
    captions = PartWriter(ledger.write_captions)
    with Progress(len(plan.to_curate), videos) as progress:
        for row in build_dataset(output, plan, config, stand_in, videos).iter_rows():
            outcome = task_of(row).outcome
            captions.add([outcome])
            progress.scene_done(outcome["sample"] is not None)
            if outcome["sample"] is None:
                log.warning("scene %s failed: %s", outcome["key"], outcome["error"])
        if videos is not None:
            ray.get(videos.flush.remote())
    captions.flush()


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
    """Run the job; returns the summary. Raises ``JobError`` (or anything Ray raises) when broken.

    ``output`` is a local folder or any fsspec URL; everything the job writes goes there."""
    started = time.perf_counter(), time.time_ns()
    store = Store(output)
    uris = discover_inputs(source, limit)
    if not uris:
        raise JobError(f"no videos found at {source}")
    stand_in = resolve_model(config)
    address = cluster_address(ray_address)
    check_captioner(config, stand_in, address)
    plan = plan_work(Ledger(store), uris, config.retry_failed)
    log.info(
        "%d inputs: %d to curate, %d more scenes to caption, the rest done in an earlier run",
        len(uris), len(plan.to_curate), len(plan.to_caption),
    )
    # Temporary files of a killed run (its stragglers, if any, write under other names).
    store.remove_partials()
    connect = RayConnection(address, num_cpus)
    try:
        if plan.to_curate or plan.to_caption:
            connect()
            caption_all(store.url, plan, config, stand_in)
        write_shards = write_on_ray(store.url, config.resources.shards_cpus, connect)
        return finish(store, uris, config, stand_in, started, write_shards)
    finally:
        connect.close()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", required=True,
                        help="videos: a folder (searched recursively), a file, a glob, or a URI such as "
                             "s3://bucket/prefix/; an existing path is taken literally (required)")
    parser.add_argument("--output", required=True,
                        help="output: a local folder or a URL such as s3://bucket/prefix (any fsspec store; "
                             "credentials from the store's usual settings, e.g. AWS_*); a rerun into it resumes (required)")
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
