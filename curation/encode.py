"""H.264 encoding of RGB frames with PyAV (FFmpeg's libx264, bundled in PyAV's wheels)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


class VideoWriter:
    """Streams RGB frames into a video file; use as a context manager."""

    def __init__(
        self,
        path: str | Path,
        width: int,
        height: int,
        fps: float,
        codec: str = "libx264",
        crf: int = 18,
        preset: str = "veryfast",
        pix_fmt: str = "yuv420p",
    ) -> None:
        self.path = str(path)
        self._container = av.open(self.path, mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        self._stream = self._container.add_stream(codec, rate=rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, pix_fmt
        if codec == "libx264":
            self._stream.options = {"crf": str(crf), "preset": preset}
        self.frames_written = 0

    def write(self, image: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
        self._container.mux(self._stream.encode(frame))
        self.frames_written += 1

    def close(self) -> None:
        if self._container is not None:
            self._container.mux(self._stream.encode())  # flush delayed frames
            self._container.close()
            self._container = None

    def abort(self) -> None:
        """Close without flushing and remove the partial file."""
        if self._container is not None:
            self._container.close()
            self._container = None
        Path(self.path).unlink(missing_ok=True)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
