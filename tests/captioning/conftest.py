import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from captioning_helpers import write_multishot_video  # noqa: E402

from captioning.__main__ import main  # noqa: E402
from captioning.frames import SceneInput  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """The tiny VLM, built once per session through the CLI."""
    outdir = tmp_path_factory.mktemp("tiny-vlm")
    assert main(["tiny-model", str(outdir)]) == 0
    return str(outdir)


@pytest.fixture(scope="session")
def scenes(tmp_path_factory) -> list[SceneInput]:
    """Four scenes of 3, 1, 2 and 4 shots, each in its own 16 fps video."""
    folder = tmp_path_factory.mktemp("videos")
    result = []
    for n, lengths in enumerate([(13, 8, 12), (17,), (9, 16), (8, 8, 8, 9)]):
        path = folder / f"scene{n}.mp4"
        spans = write_multishot_video(path, lengths)
        result.append(SceneInput(f"scene{n}", str(path), tuple(spans)))
    return result
