"""Synthetic multi-shot test videos written with PyAV (libx264, 16 fps)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import av
import numpy as np

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
