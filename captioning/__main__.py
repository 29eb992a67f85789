"""``python -m captioning``: build the tiny test VLM, or caption one video's scene.

    python -m captioning tiny-model OUTDIR
    python -m captioning caption --model DIR --video clip.mp4 --shots 0-37,37-73,73-121
    python -m captioning caption --endpoint http://host:8000/v1 --model NAME --video clip.mp4 --shots 0-37,37-73
    python -m captioning caption --config captioning.yaml --video clip.mp4 --shots 0-37,37-73,73-121
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence

from .config import CaptionerConfig


def _parse_shots(text: str) -> tuple[tuple[int, int], ...]:
    spans = []
    for item in text.split(","):
        start, _, end = item.partition("-")
        spans.append((int(start), int(end)))
    return tuple(spans)


def _load_config(args: argparse.Namespace) -> CaptionerConfig:
    """The ``--config`` file (or the defaults) with ``--endpoint``, ``--engine`` and ``--model`` on top."""
    import yaml

    data = (yaml.safe_load(Path(args.config).read_text()) or {}) if args.config else {}
    config = CaptionerConfig.from_dict(data)
    config.use(engine=args.engine, model=args.model, endpoint=args.endpoint)
    return config


def _caption(args: argparse.Namespace) -> int:
    from .captioner import Captioner
    from .engines import EngineUnavailable, check_engine
    from .frames import SceneInput

    config = _load_config(args)
    try:
        check_engine(config)
    except EngineUnavailable as exc:
        # A wrong path or a server that is down is the user's to fix: one line, no traceback.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    scene = SceneInput(args.key or Path(args.video).stem, args.video, _parse_shots(args.shots))
    (result,) = Captioner(config).caption([scene])
    if not result.ok:
        print(json.dumps({"key": result.key, "error": result.error, "tries": result.tries}))
        return 1
    print(json.dumps({"key": result.key, **(result.sample or {})}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    defaults = CaptionerConfig()
    parser = argparse.ArgumentParser(prog="python -m captioning", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    tiny = commands.add_parser("tiny-model", help="write a tiny random-weight VLM for tests")
    tiny.add_argument("outdir", help="folder to write the model to (created)")
    tiny.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: %(default)s)")

    caption = commands.add_parser("caption", help="caption one scene and print its shard fields as JSON")
    caption.add_argument(
        "--config",
        help="YAML mapping of CaptionerConfig fields (README, Captioning); --engine, --model and --endpoint "
        "override it (default: none, CaptionerConfig's defaults)",
    )
    caption.add_argument(
        "--engine",
        choices=["transformers", "openai", "vllm"],
        help=f"transformers (a local model directory), openai (a served model) or vllm "
        f"(default: the config's engine, else {defaults.engine}; openai with --endpoint)",
    )
    caption.add_argument(
        "--model",
        help="model directory (transformers, vllm) or served model name (openai) "
        "(default: the config's model; one of the two must name it)",
    )
    caption.add_argument(
        "--endpoint",
        metavar="URL",
        help=f"OpenAI-compatible base URL, e.g. http://host:8000/v1; implies --engine openai "
        f"(default: the config's openai.base_url, else {defaults.openai.base_url}, used with engine openai only)",
    )
    caption.add_argument("--video", required=True, help="the video file (required)")
    caption.add_argument(
        "--shots",
        required=True,
        help="shot spans as [start, end) frames of --video, comma separated: 0-37,37-73,... (required)",
    )
    caption.add_argument("--key", help="the scene's key in the output (default: the video's file name without extension)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "tiny-model":
        from .tiny import build_tiny_vlm

        print(build_tiny_vlm(args.outdir, seed=args.seed))
        return 0
    return _caption(args)


if __name__ == "__main__":
    sys.exit(main())
