"""Shot detection throughput against decode-only throughput, on one core.

Decode-only reads every frame with the decoder, settings and size detection uses (the probe's
choice of decoder, without deblocking unless --deblock, `analysis_width` wide); detection is the
whole `detect_shots` (PySceneDetect, thumbnails, fades and dissolves). Target: detection >= 0.9 x
decode-only at 1080p and 360p.

    python benchmarks/shot_detection.py [--seconds 12] [--repeats 3] [VIDEO ...]

Without VIDEO arguments, synthetic 1080p and 360p H.264 files with cuts, a fade and a
dissolve are generated in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from curation.config import DetectConfig
from curation.decode import open_reader
from curation.probe import probe_video
from curation.shots import analysis_size, detect_shots
from curation.synthetic import Join, make_multishot_video


def _make_inputs(folder: str, seconds: float) -> list[str]:
    fps = 24
    shot = int(seconds * fps / 6)
    joins = [Join("cut"), Join("fade", 8, 4), Join("cut"), Join("dissolve", 12), Join("cut")]
    paths = []
    for name, (width, height) in {"1080p": (1920, 1080), "360p": (640, 360)}.items():
        path = os.path.join(folder, f"synthetic_{name}.mp4")
        make_multishot_video(path, [shot] * 6, joins, width=width, height=height, fps=fps, seed=1)
        paths.append(path)
    return paths


def _cpu_seconds(run) -> float:
    # CPU time of this process (pinned to one core, one decode thread): robust to other load.
    start = time.process_time()
    run()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*")
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--analysis-width", type=int, default=DetectConfig.analysis_width)
    parser.add_argument("--deblock", action="store_true", help="decode with the deblocking filter")
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config = DetectConfig(analysis_width=args.analysis_width, skip_deblocking=not args.deblock)
    with tempfile.TemporaryDirectory() as folder:
        videos = args.videos or _make_inputs(folder, args.seconds)
        print(f"{'video':<24} {'size':>10} {'decoder':>8} {'decode fps':>11} {'detect fps':>11} {'ratio':>6}")
        for path in videos:
            info = probe_video(path)
            if not info.ok:
                raise SystemExit(f"{path}: {info.error}")
            width, height = analysis_size(info.width, info.height, config)
            reader = open_reader(path, info.decoder, threads=1, skip_deblocking=config.skip_deblocking)

            def decode_only() -> None:
                for _ in reader.frames(width, height):
                    pass

            # Interleaved repeats, best of each: both see the same machine state.
            detect_times, decode_times = [], []
            for _ in range(args.repeats):
                decode_times.append(_cpu_seconds(decode_only))
                detect_times.append(_cpu_seconds(lambda: detect_shots(info, config, threads=1)))
            decode_fps = info.num_frames / min(decode_times)
            detect_fps = info.num_frames / min(detect_times)
            print(
                f"{os.path.basename(path):<24} {info.width}x{info.height:<5} {info.decoder:>8} "
                f"{decode_fps:>11.1f} {detect_fps:>11.1f} {detect_fps / decode_fps:>6.2f}"
            )


if __name__ == "__main__":
    main()
