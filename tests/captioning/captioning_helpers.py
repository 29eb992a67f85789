"""Shared test helpers: synthetic multi-shot videos (PyAV, libx264, 16 fps) and small caption caps.

A uniquely named module rather than ``conftest`` imports, which other test folders' conftests shadow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import av
import numpy as np

from captioning.schema import Limits

# Small caps keep a random model's constrained answers (and CPU time) short.
SMALL_LIMITS = Limits(max_characters=2, global_chars=40, shot_chars=30, camera_chars=12, description_chars=16)

COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 200, 40), (200, 40, 200), (40, 200, 200)]


def write_multishot_video(path: Path, shot_lengths: Sequence[int], size: int = 128, fps: int = 16) -> list[tuple[int, int]]:
    """Write one solid colour per shot, a bar moving across the bottom half; return the shot spans.

    The top half stays the shot's plain colour, so a test can tell which shot a frame came from.
    """
    spans, start = [], 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for shot, length in enumerate(shot_lengths):
            colour = np.array(COLOURS[shot % len(COLOURS)], dtype=np.uint8)
            for j in range(length):
                image = np.empty((size, size, 3), dtype=np.uint8)
                image[:] = colour
                bar = (j * 7) % (size - 8)
                image[size // 2 :, bar : bar + 8] = 255 - colour
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                container.mux(stream.encode(frame))
            spans.append((start, start + length))
            start += length
        container.mux(stream.encode())
    return spans
