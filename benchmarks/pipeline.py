"""Throughput of the caption pipeline's CPU stages against decoding alone, on the same files.

    python benchmarks/pipeline.py [--input DIR] [--config pipelines/configs/default.yaml] [--set k=v ...]

Prints video-seconds per CPU-second through probe -> shots (detect, filters, scenes) -> clips
(captioning off), and through one decode-only pass (PyAV, every frame decoded, no conversion),
both single-threaded in this process; and their ratio (target >= 0.6). It also prints the ratio
to the clips stage alone: one full decode, scale and H.264 encode of every clip frame is the least
work any pipeline writing these clips can do, so that ratio says how much detection adds on top.
CPU seconds are this process's user + system time, so the figure does not depend on what else
the machine runs.
Without --input, sample videos are generated as ``python -m curation sample`` makes them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import av

from curation.__main__ import main as curation_cli
from curation.inputs import discover_inputs
from curation.run import clips_step, probe_step, scenes_step
from pipelines.config import load_config

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "pipelines" / "configs" / "default.yaml"


def decode_only(path: str) -> None:
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        for _ in container.decode(stream):
            pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", help="folder of videos (default: generated samples)")
    parser.add_argument("--count", type=int, default=3, help="sample videos to generate without --input")
    parser.add_argument("--sample-size", default="854x480", help="WxH of generated samples (film sources are often 1920x1080)")
    parser.add_argument("--config", default=str(DEFAULT_CONFIG))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core: steadier CPU times
    config = load_config(args.config, args.set).curation
    config.probe.decode_threads = 1

    with tempfile.TemporaryDirectory() as tmp:
        source = args.input or str(Path(tmp) / "samples")
        if not args.input:
            width, height = args.sample_size.split("x")
            curation_cli(["sample", source, "--count", str(args.count), "--width", width, "--height", height])
        uris = discover_inputs(str(source))
        seconds = {"probe": 0.0, "shots": 0.0, "clips": 0.0, "decode": 0.0}
        video_s = 0.0
        for uri in uris:
            start = time.process_time()
            record = probe_step(uri, uri, config)
            seconds["probe"] += time.process_time() - start
            start = time.process_time()
            scenes_step(record, uri, config)
            seconds["shots"] += time.process_time() - start
            start = time.process_time()
            clips_step(record, uri, tmp, config)
            seconds["clips"] += time.process_time() - start
            start = time.process_time()
            decode_only(uri)
            seconds["decode"] += time.process_time() - start
            info, scenes = record.info, record.scenes
            video_s += info.duration_s
            print(f"{Path(uri).name}: {info.duration_s:.1f} s of {info.width}x{info.height} @ {info.fps:g} fps, "
                  f"{len(scenes)} scenes, {sum(s.num_frames for s in scenes)} clip frames")

    stages = seconds["probe"] + seconds["shots"] + seconds["clips"]
    clip = config.clips
    print(f"\nclips {clip.width}x{clip.height}, preset {clip.preset}, crf {clip.crf}; tiers {config.scenes.tiers}")
    for name in ("probe", "shots", "clips"):
        print(f"  {name:<6} {seconds[name]:7.2f} CPU-s")
    print(f"CPU stages : {video_s / stages:7.2f} video-s per CPU-s ({stages:.2f} CPU-s for {video_s:.1f} video-s)")
    print(f"decode only: {video_s / seconds['decode']:7.2f} video-s per CPU-s ({seconds['decode']:.2f} CPU-s)")
    print(f"ratio      : {seconds['decode'] / stages:7.2f} (target >= 0.6)")
    print(f"clips alone: {video_s / seconds['clips']:7.2f} video-s per CPU-s (decode + scale + encode, the floor)")
    print(f"ratio      : {seconds['clips'] / stages:7.2f} to the clips stage alone")


if __name__ == "__main__":
    main()
