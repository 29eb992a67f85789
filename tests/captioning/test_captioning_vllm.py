"""The vllm engine's settings. vLLM itself needs a GPU: ``benchmarks/captioning.py`` runs it there."""

from captioning.config import CaptionerConfig, VllmConfig
from captioning.engines.vllm_engine import engine_args
from curation.config import SceneConfig


def test_engine_args_make_room_for_a_scenes_frames_and_keep_the_users_own():
    compact = {"disable_any_whitespace": True}
    assert engine_args("/models/vlm", VllmConfig()) == {
        "model": "/models/vlm", "limit_mm_per_prompt": {"image": 64}, "structured_outputs_config": compact}
    mine = VllmConfig(engine_kwargs={"max_model_len": 8192, "limit_mm_per_prompt": {"image": 8}})
    assert engine_args("/models/vlm", mine) == {
        "model": "/models/vlm", "limit_mm_per_prompt": {"image": 8}, "structured_outputs_config": compact,
        "max_model_len": 8192}


def test_a_scene_of_the_most_shots_fits_the_default_image_limit():
    # vLLM refuses a prompt with more images than the limit: the largest joint request must fit.
    assert SceneConfig().max_shots * CaptionerConfig().frames_per_shot <= VllmConfig().max_images_per_prompt


def test_each_engine_is_handed_scenes_in_its_own_batches():
    config = CaptionerConfig()
    config.transformers.batch_size, config.openai.concurrency, config.vllm.batch_size = 3, 5, 7
    per_engine = [CaptionerConfig(**{**vars(config), "engine": engine}).scenes_per_call()
                  for engine in ("transformers", "openai", "vllm")]
    assert per_engine == [3, 5, 7]
