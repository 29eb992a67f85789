"""``python -m captioning``: build the tiny test VLM, or caption one video's scene.

    python -m captioning tiny-model OUTDIR
    python -m captioning caption --config captioning.yaml --video clip.mp4 --shots 0-37,37-73,73-121
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Sequence


def _parse_shots(text: str) -> tuple[tuple[int, int], ...]:
    spans = []
    for item in text.split(","):
        start, _, end = item.partition("-")
        spans.append((int(start), int(end)))
    return tuple(spans)


def _caption(args: argparse.Namespace) -> int:
    import yaml

    from .captioner import Captioner
    from .config import CaptionerConfig
    from .frames import SceneInput

    config = CaptionerConfig.from_dict(yaml.safe_load(Path(args.config).read_text()) or {})
    scene = SceneInput(args.key or Path(args.video).stem, args.video, _parse_shots(args.shots))
    (result,) = Captioner(config).caption([scene])
    if not result.ok:
        print(json.dumps({"key": result.key, "error": result.error, "tries": result.tries}))
        return 1
    print(json.dumps({"key": result.key, **(result.sample or {})}, indent=2))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m captioning", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    tiny = commands.add_parser("tiny-model", help="write a tiny random-weight VLM for tests")
    tiny.add_argument("outdir")
    tiny.add_argument("--seed", type=int, default=0)
    caption = commands.add_parser("caption", help="caption one scene and print its shard fields as JSON")
    caption.add_argument("--config", required=True, help="YAML mapping of CaptionerConfig fields")
    caption.add_argument("--video", required=True)
    caption.add_argument("--shots", required=True, help="shot spans in video frames: 0-37,37-73,...")
    caption.add_argument("--key", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "tiny-model":
        from .tiny import build_tiny_vlm

        print(build_tiny_vlm(args.outdir, seed=args.seed))
        return 0
    return _caption(args)


if __name__ == "__main__":
    sys.exit(main())
