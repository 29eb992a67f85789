import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from pipelines.models import ensure_stand_in_model  # noqa: E402


@pytest.fixture(scope="session")
def holocine_cache(tmp_path_factory) -> Path:
    """A cache folder with the stand-in VLM built once, shared by every job the tests start."""
    cache = tmp_path_factory.mktemp("holocine-cache")
    ensure_stand_in_model(cache / "tiny-vlm")
    return cache
