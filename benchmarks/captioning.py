"""Captioning throughput per GPU for each engine on the same scenes: scenes/s, output tokens/s, prompt tokens.

    python benchmarks/captioning.py --model DIR [--engines vllm,openai,transformers] [--tiers 5s,15s]
        [--strategies joint,two_pass] [--scenes 128] [--transformers-scenes 16] [--out results.json]

Scenes are synthetic multi-shot clips (``curation.synthetic``), each drawn with its own seed so no
two share a frame (vLLM's prefix cache would otherwise reuse their images). A tier's scenes have
the shot counts of that tier's scenes in real footage (5 s: 2 or 3 shots, 15 s: 4 to 6) and frames
sized like a 16:9 source shrunk to ``max_side`` (448x252 at the default), so the VLM reads the
images it would read in a real run. Each engine runs in a process of its own (the GPU is freed
between engines) and loads its model once; every (tier, strategy) is warmed up on two scenes, then
timed over all of them. Time counts only the engine's ``generate`` calls: frames are decoded on
CPU workers in the pipeline, not on the captioning GPU. Each request is asked once (max_tries 1),
so every engine answers the same number of requests.

``openai`` starts ``vllm serve`` on the model (same engine arguments) and talks to it over HTTP
unless ``--endpoint`` names a running server. With a random-weight model (``python -m captioning.random_vlm``)
the captions are noise, but structured output keeps every answer inside the schema, so each
string runs to its length cap: answers are longer than a trained model's, an upper bound.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from captioning.captioner import Captioner  # noqa: E402
from captioning.config import CaptionerConfig  # noqa: E402
from captioning.engines import make_engine  # noqa: E402
from captioning.engines.base import Engine, Reply  # noqa: E402
from captioning.engines.vllm_engine import engine_args  # noqa: E402
from captioning.frames import SceneInput  # noqa: E402
from captioning.requests import ChatRequest  # noqa: E402
from curation.synthetic import make_multishot_video  # noqa: E402

SHOT_COUNTS = {"5s": (2, 3), "15s": (4, 5, 6), "60s": (8, 10, 12)}
SHOT_FRAMES = 12  # enough for 4 distinct sampled frames per shot; the VLM sees only those
WIDTH, HEIGHT = 448, 252
SERVE_STARTUP_S = 900
WARMUP_SCENES = 2  # per tier, captioned before the timed ones (grammar compiles, CUDA graphs, caches)


@dataclass
class Meter:
    """The engine, counting what passes through ``generate`` and the time spent inside it."""

    engine: Engine
    seconds: float = 0.0
    requests: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    errors: int = 0

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def model(self) -> str:
        return self.engine.model

    def generate(self, requests: Sequence[ChatRequest]) -> list[Reply]:
        start = time.perf_counter()
        replies = self.engine.generate(requests)
        self.seconds += time.perf_counter() - start
        self.requests += len(requests)
        self.prompt_tokens += sum(reply.prompt_tokens or 0 for reply in replies)
        self.output_tokens += sum(reply.output_tokens or 0 for reply in replies)
        self.errors += sum(reply.error is not None for reply in replies)
        return replies


@dataclass
class Row:
    engine: str
    tier: str
    strategy: str
    scenes: int
    requests: int
    seconds: float
    scenes_per_s: float
    output_tokens_per_s: float
    prompt_tokens_per_scene: float
    output_tokens_per_scene: float
    valid: int  # scenes whose one answer passed validation
    errors: int  # requests the engine could not answer at all
    extra: dict[str, Any] = field(default_factory=dict)


def make_scenes(folder: Path, tier: str, count: int, seed: int) -> list[SceneInput]:
    """``count`` scenes of ``tier``'s shot counts, each its own small clip with its own pictures.

    Written once into ``folder`` (with a listing); the engines' processes read the listing."""
    listing = folder / f"scenes-{tier}.json"
    if listing.exists():
        return [SceneInput(key, path, tuple(map(tuple, shots))) for key, path, shots in json.loads(listing.read_text())]
    folder.mkdir(parents=True, exist_ok=True)
    counts = SHOT_COUNTS[tier]
    scenes = []
    for i in range(count):
        path = folder / f"{tier}-{i:04d}.mp4"
        truth = make_multishot_video(path, [SHOT_FRAMES] * counts[i % len(counts)], width=WIDTH, height=HEIGHT,
                                     fps=16, seed=seed + i)
        scenes.append(SceneInput(f"{tier}-{i:04d}", str(path), tuple(truth.shots)))
    listing.write_text(json.dumps([[s.key, s.video_path, s.shots] for s in scenes]))
    return scenes


def measure(engine: Engine, config: CaptionerConfig, tier: str, warmup: list[SceneInput], scenes: list[SceneInput]) -> Row:
    """Warm up on scenes of the tier not timed, then caption ``scenes`` once through a metered engine."""
    meter = Meter(engine)
    Captioner(config, engine=engine).caption(warmup)
    results = Captioner(config, engine=meter).caption(scenes)
    seconds = max(meter.seconds, 1e-9)
    return Row(
        engine=engine.name,
        tier=tier,
        strategy=config.strategy,
        scenes=len(scenes),
        requests=meter.requests,
        seconds=round(seconds, 2),
        scenes_per_s=round(len(scenes) / seconds, 3),
        output_tokens_per_s=round(meter.output_tokens / seconds, 1),
        prompt_tokens_per_scene=round(meter.prompt_tokens / len(scenes), 1),
        output_tokens_per_scene=round(meter.output_tokens / len(scenes), 1),
        valid=sum(result.ok for result in results),
        errors=meter.errors,
    )


def serve_flags(engine_kwargs: dict[str, Any]) -> list[str]:
    """``vllm.LLM`` keyword arguments as ``vllm serve`` flags."""
    flags = []
    for key, value in engine_kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not False:
            flags += [flag, json.dumps(value) if isinstance(value, (dict, list)) else str(value)]
    return flags


@contextlib.contextmanager
def vllm_server(config: CaptionerConfig, port: int, log: Path) -> Iterator[str]:
    """``vllm serve`` with the offline engine's arguments; yields its base URL once it lists the model."""
    kwargs = engine_args(config.model, config.vllm)
    model = kwargs.pop("model")
    command = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", model, "--port", str(port),
               "--served-model-name", model, *serve_flags(kwargs)]
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + SERVE_STARTUP_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base_url}/models", timeout=5) as response:
                    if model in response.read().decode():
                        break
            if time.monotonic() > deadline:
                raise TimeoutError(f"vllm serve did not answer in {SERVE_STARTUP_S} s")
            time.sleep(2)
        yield base_url
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=60)
        if process.poll() is None:
            process.kill()


def base_config(args: argparse.Namespace, engine: str) -> CaptionerConfig:
    config = CaptionerConfig(engine=engine, model=args.model, frames_per_shot=args.frames_per_shot, max_tries=1,
                             max_tokens=args.max_tokens)
    config.vllm.engine_kwargs = dict(args.engine_kwargs)
    config.transformers.batch_size = args.transformers_batch
    config.openai.concurrency = args.openai_concurrency
    config.openai.timeout_s = 1800
    return config


def run_engine(args: argparse.Namespace, engine_name: str, scenes: dict[str, list[SceneInput]]) -> list[Row]:
    """Every (tier, strategy) on one engine, its model loaded once."""
    with contextlib.ExitStack() as stack:
        config = base_config(args, engine_name)
        if engine_name == "openai":
            config.openai.base_url = args.endpoint or stack.enter_context(
                vllm_server(config, args.port, Path(args.workdir) / "vllm-serve.log"))
        start = time.perf_counter()
        engine = make_engine(config)
        loaded = time.perf_counter() - start
        rows = []
        for tier, tier_scenes in scenes.items():
            warmup, timed = tier_scenes[:WARMUP_SCENES], tier_scenes[WARMUP_SCENES:]
            if engine_name == "transformers":
                timed = timed[: args.transformers_scenes]
            for strategy in args.strategies:
                config.strategy = strategy
                row = measure(engine, config, tier, warmup, timed)
                row.extra["load_s"] = round(loaded, 1)
                print(json.dumps(asdict(row)), flush=True)
                rows.append(row)
        return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    header = ("engine", "tier", "strategy", "scenes", "requests", "seconds", "scenes_per_s", "output_tokens_per_s",
              "prompt_tokens_per_scene", "output_tokens_per_scene", "valid", "errors")
    print(" | ".join(header))
    for row in rows:
        print(" | ".join(str(row[key]) for key in header))
    by_key = {(r["engine"], r["tier"], r["strategy"]): r for r in rows}
    for (engine, tier, strategy), row in by_key.items():
        base = by_key.get(("transformers", tier, strategy))
        if engine != "transformers" and base and base["scenes_per_s"]:
            print(f"{engine} / transformers, {tier} {strategy}: {row['scenes_per_s'] / base['scenes_per_s']:.1f}x scenes/s; "
                  f"{row['scenes_per_s'] * 3600:.0f} scenes per GPU-hour")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a local Hugging Face VLM directory")
    parser.add_argument("--engines", default="vllm,openai,transformers")
    parser.add_argument("--tiers", default="5s,15s")
    parser.add_argument("--strategies", default="joint,two_pass")
    parser.add_argument("--scenes", type=int, default=128, help="scenes per tier (vllm, openai)")
    parser.add_argument("--transformers-scenes", type=int, default=16, help="scenes per tier for the transformers engine")
    parser.add_argument("--transformers-batch", type=int, default=8)
    parser.add_argument("--openai-concurrency", type=int, default=128)
    parser.add_argument("--frames-per-shot", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=None, help="cap on answer tokens (default: the schema's bound)")
    parser.add_argument("--engine-kwargs", type=json.loads, default={"max_model_len": 16384},
                        help="JSON for vllm.LLM / vllm serve")
    parser.add_argument("--endpoint", help="an OpenAI-compatible server already serving --model (else vllm serve is started)")
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--workdir", help="where clips and logs go (default: a temporary folder)")
    parser.add_argument("--out", type=Path, help="write all rows here as JSON")
    parser.add_argument("--one-engine", help=argparse.SUPPRESS)  # the child process of one engine
    args = parser.parse_args()
    args.strategies = args.strategies.split(",")
    tiers = args.tiers.split(",")

    with contextlib.ExitStack() as stack:
        if args.workdir is None:
            args.workdir = stack.enter_context(tempfile.TemporaryDirectory())
        scenes = {tier: make_scenes(Path(args.workdir) / "clips", tier, WARMUP_SCENES + args.scenes, seed=10_000 * n)
                  for n, tier in enumerate(tiers)}
        if args.one_engine:
            rows = run_engine(args, args.one_engine, scenes)
            Path(args.workdir, f"rows-{args.one_engine}.json").write_text(json.dumps([asdict(r) for r in rows]))
            return
        all_rows: list[dict[str, Any]] = []
        for engine in args.engines.split(","):
            start = time.perf_counter()
            child = [sys.executable, __file__, *sys.argv[1:], "--one-engine", engine, "--workdir", args.workdir]
            done = subprocess.run(child, env={**os.environ, "PYTHONUNBUFFERED": "1"})
            rows_file = Path(args.workdir, f"rows-{engine}.json")
            if done.returncode != 0 or not rows_file.exists():
                print(f"{engine}: failed with exit code {done.returncode} after {time.perf_counter() - start:.0f} s", flush=True)
                continue
            all_rows += json.loads(rows_file.read_text())
        if args.out:
            args.out.write_text(json.dumps(all_rows, indent=1))
        print_table(all_rows)


if __name__ == "__main__":
    main()
