"""Command line: ``python -m curation {shots,scenes,sample} ...``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter

from curation.config import CurationConfig
from curation.probe import probe_video
from curation.run import curate_folder
from curation.shots import detect_shots
from curation.synthetic import Join, make_multishot_video


def _load_config(path: str | None) -> CurationConfig:
    return CurationConfig.from_yaml(path) if path else CurationConfig()


def cmd_shots(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    if args.detector:
        config.detect.detector = args.detector
    info = probe_video(args.video, config.probe)
    if not info.ok:
        print(f"error: {args.video}: {info.error}", file=sys.stderr)
        return 1
    detection = detect_shots(info, config.detect, threads=config.probe.decode_threads)
    print(json.dumps(detection.to_json(args.video)))
    return 0


def cmd_scenes(args: argparse.Namespace) -> int:
    config = _load_config(args.config)
    if args.width:
        config.clips.width = args.width
    if args.height:
        config.clips.height = args.height
    results = curate_folder(args.input_dir, args.output_dir, config)
    failures = Counter(r.info.error for r in results if not r.info.ok)
    tiers = Counter(s.tier for r in results for s in r.scenes if s.clip_path)
    summary = {
        "videos": len(results),
        "failed": sum(failures.values()),
        "failures": dict(failures),
        "shots": sum(len(r.shots) for r in results),
        "shots_kept": sum(s.kept for r in results for s in r.shots),
        "clips_by_tier": dict(tiers),
    }
    print(json.dumps(summary, indent=2))
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    """Write a few synthetic multi-shot videos (hard cuts, a fade, a dissolve) to try the tools on."""
    import os

    os.makedirs(args.output_dir, exist_ok=True)
    for i in range(args.count):
        # About 30 s: enough shots for a 5 s and a 15 s scene, with every kind of join.
        lengths = [40 + 13 * ((3 * i + k) % 4) for k in range(12)]
        joins = [Join("cut")] * 11
        joins[3] = Join("fade", 8, 4)
        joins[7] = Join("dissolve", 12)
        path = os.path.join(args.output_dir, f"sample_{i:02d}.mp4")
        make_multishot_video(path, lengths, joins, width=args.width, height=args.height, fps=24, seed=i)
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    defaults = CurationConfig()
    config_help = "curation YAML config, keys as in curation/config.py (default: none, the built-in defaults)"
    parser = argparse.ArgumentParser(prog="python -m curation", description=__doc__)
    parser.add_argument("--log-level", default="WARNING", help="logging level, e.g. INFO or DEBUG (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)

    shots = sub.add_parser("shots", help="detect the shots of one video and print them as JSON")
    shots.add_argument("video", help="the video file")
    shots.add_argument(
        "--detector",
        choices=["adaptive", "content"],
        help="hard-cut detector: PySceneDetect's AdaptiveDetector or ContentDetector "
        f"(default: the config's detect.detector, else {defaults.detect.detector})",
    )
    shots.add_argument("--config", help=config_help)
    shots.set_defaults(func=cmd_shots)

    scenes = sub.add_parser("scenes", help="probe -> shots -> filters -> scenes -> clips for a folder, in this process")
    scenes.add_argument("input_dir", help="source videos: a folder, a file, a glob or a URL such as s3://bucket/prefix/")
    scenes.add_argument("output_dir", help="where clips/ and manifests/ go: a folder (created) or a URL such as s3://bucket/out")
    scenes.add_argument("--config", help=config_help)
    scenes.add_argument(
        "--width", type=int, help=f"clip width in pixels (default: the config's clips.width, else {defaults.clips.width})"
    )
    scenes.add_argument(
        "--height", type=int, help=f"clip height in pixels (default: the config's clips.height, else {defaults.clips.height})"
    )
    scenes.set_defaults(func=cmd_scenes)

    sample = sub.add_parser("sample", help="write synthetic multi-shot sample videos")
    sample.add_argument("output_dir", help="folder to write sample_NN.mp4 to (created)")
    sample.add_argument("--count", type=int, default=3, help="number of videos (default: %(default)s)")
    sample.add_argument("--width", type=int, default=854, help="frame width in pixels (default: %(default)s)")
    sample.add_argument("--height", type=int, default=480, help="frame height in pixels (default: %(default)s)")
    sample.set_defaults(func=cmd_sample)

    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
