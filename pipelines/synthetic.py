"""Synthetic finished work: an output as the job leaves it, without any video, at any size.

For the bookkeeping benchmark and tests: the ledger's parts (curated videos with their shots and
scenes, captioned samples, packed shards) and one small object per shard, so that a rerun over
these inputs has nothing to do and exercises only the driver's bookkeeping. Clip objects are
written only for the scenes not yet packed (``unpacked_videos``), the work a run would add.
"""

from __future__ import annotations

import json

from curation.shards import SampleMeta, shard_name
from curation.store import Store
from curation.types import Scene, SceneShot, Shot, VideoInfo, scene_key, video_id_for
from curation.run import VideoRecord
from pipelines.ledger import Ledger

FPS = 24.0
SCENE_FRAMES = 121  # a 5 s scene
SHOTS_PER_SCENE = 3
SHOTS_PER_VIDEO = 8
# A caption of a realistic length (HoloCine's are a few hundred characters per shot).
WORDS = "a woman in a red coat walks along the harbour at dusk while gulls circle above the boats".split()


def input_uris(prefix: str, count: int, start: int = 0) -> list[str]:
    return [f"{prefix}/video-{i:07d}.mp4" for i in range(start, start + count)]


def _text(seed: int, words: int) -> str:
    return " ".join(WORDS[(seed + k) % len(WORDS)] for k in range(words))


def finished_record(uri: str, clip_uri: str, scenes: int) -> VideoRecord:
    """A curated video of ``scenes`` 5 s scenes of three shots each, its clips at ``clip_uri/KEY.mp4``."""
    video_id = video_id_for(uri)
    frames = scenes * SCENE_FRAMES + 240
    info = VideoInfo(video_id, uri, fps=FPS, num_frames=frames, width=1920, height=1080,
                     duration_s=frames / FPS, codec="h264", decoder="pyav", fades=1, dissolves=1)
    step = frames // SHOTS_PER_VIDEO
    shots = [
        Shot(video_id, i, i * step, (i + 1) * step, FPS, kept=i != 0, drop_reason=None if i else "too_short (0.4 s < 1.0 s)",
             scores={"brightness": 90.0, "motion": 2.5, "damaged": 0.0})
        for i in range(SHOTS_PER_VIDEO)
    ]
    cuts = [0, 41, 81, SCENE_FRAMES]
    record_scenes = []
    for s in range(scenes):
        first = s * SCENE_FRAMES
        scene_shots = [
            SceneShot(s * SHOTS_PER_SCENE + j, cuts[j], cuts[j + 1], tuple(range(first + cuts[j], first + cuts[j + 1])))
            for j in range(SHOTS_PER_SCENE)
        ]
        key = scene_key(video_id, s)
        record_scenes.append(Scene(key, video_id, uri, s, "5s", FPS, SCENE_FRAMES, FPS, scene_shots, width=832,
                                   height=480, clip_path=f"{clip_uri}/{key}.mp4", clip_bytes=2_000_000))
    return VideoRecord(info, shots, record_scenes, {"probe": 0.1, "shots": 20.0, "clips": 10.0})


def sample_json(scene: Scene) -> str:
    shots = [{"start_frame": x.start_frame, "end_frame": x.end_frame, "caption": _text(x.shot_index, 40),
              "camera": "medium shot, static", "characters": ["[character1]"]} for x in scene.shots]
    prompt = "[global caption] " + _text(scene.scene_index, 60) + " [per shot caption] " + " [shot cut] ".join(
        s["caption"] for s in shots)
    return SampleMeta.model_validate({
        "key": scene.key,
        "source": {"uri": scene.uri, "video_id": scene.video_id, "start_s": scene.start_s, "end_s": scene.end_s},
        "fps": scene.fps, "num_frames": scene.num_frames, "width": scene.width, "height": scene.height, "tier": scene.tier,
        "global_caption": _text(scene.scene_index, 60), "characters": {"[character1]": "a woman in a red coat"},
        "shots": shots, "shot_cut_frames": scene.shot_cut_frames, "prompt": prompt,
        "captioner": {"engine": "synthetic", "model": "none", "prompt_version": "v1", "strategy": "joint"},
    }).model_dump_json()


def write_finished(
    store: Store, uris: list[str], scenes_per_video: int = 5, part_videos: int = 10_000, shard_samples: int = 1000,
    packed: bool = True,
) -> None:
    """Record ``uris`` as curated and captioned in ``store``'s ledger, a part per ``part_videos``
    videos; when ``packed``, also packed in shards of ``shard_samples`` (an empty object each, the
    numbers after any already recorded); else with a small clip object per scene, for a run to pack."""
    ledger = Ledger(store)
    taken = len(set(ledger.read("shards", ["shard"])["shard"].to_pylist()))
    clip_uri = store.uri("clips")
    packed_keys: list[str] = []
    for first in range(0, len(uris), part_videos):
        records = [finished_record(uri, clip_uri, scenes_per_video) for uri in uris[first:first + part_videos]]
        ledger.write_videos(records)
        scenes = [scene for record in records for scene in record.scenes]
        ledger.write_captions([
            {"key": s.key, "video_id": s.video_id, "sample": sample_json(s), "error": None, "tries": 1,
             "seconds_frames": 0.2, "seconds_caption": 1.5}
            for s in scenes
        ])
        if packed:
            packed_keys += [s.key for s in scenes]
        else:
            for scene in scenes:
                store.write_bytes(f"clips/{scene.key}.mp4", b"\0" * 1024)
    for index, start in enumerate(range(0, len(packed_keys), shard_samples), start=taken):
        keys = packed_keys[start:start + shard_samples]
        store.write_bytes(f"shards/{shard_name(index)}", json.dumps(keys[:1]).encode())
        ledger.write_shard(shard_name(index), keys)
