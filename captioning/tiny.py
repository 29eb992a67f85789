"""A tiny random-weight LLaVA saved as an ordinary Hugging Face model directory.

No model hub is reachable in development and CI, so tests need a VLM built from a config. Its
captions are noise; it exists to exercise the machinery (processor, chat template, images,
constrained decoding, ``transformers serve``) with real classes. LLaVA rather than Qwen2-VL because
Qwen2-VL's processor cannot be built without torchvision in transformers 5.x (its video processor).
"""

from __future__ import annotations

import logging
import string
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 28
PATCH_SIZE = 14
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", IMAGE_TOKEN]

# A ChatML template: string or list content, images as ``{"type": "image"}`` parts (what both our
# engine and ``transformers serve`` pass to the processor).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}<image>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# The tokenizer must be able to spell every character a JSON grammar may require, so the training
# text covers all printable ASCII (JSON punctuation, digits, letters, brackets) besides some words.
_TRAINING_LINES = [
    string.printable,
    '{"characters": {"[character1]": "a woman in a red coat"}, "global_caption": "A quiet street.",',
    '"shots": [{"caption": "Medium shot of [character1] walking.", "camera": "medium shot, static",',
    '"characters": ["[character1]", "[character2]"]}]} close-up wide shot pan tilt dolly tracking',
    "The scene is set in a kitchen at night. [character2] is a man with grey hair.",
]


def build_tokenizer() -> "PreTrainedTokenizerFast":
    """A byte-level BPE tokenizer trained on a few lines, with ChatML and image special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_TRAINING_LINES * 4, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )
    return tokenizer


def build_tiny_vlm(outdir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random LLaVA (model, tokenizer, image processor, chat template) to ``outdir``."""
    import torch
    from transformers import (
        CLIPImageProcessorPil,
        GenerationConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    eos_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    text_config = {
        "model_type": "llama",
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "max_position_embeddings": 4096,
        "eos_token_id": eos_id,
        "bos_token_id": pad_id,
        "pad_token_id": pad_id,
    }
    # A 28x28 input and 14px patches give 4 image tokens per frame: many frames stay cheap on CPU.
    vision_config = {
        "model_type": "clip_vision_model",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": PATCH_SIZE,
        "projection_dim": 32,
    }
    config = LlavaConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, do_sample=False)
    model.save_pretrained(outdir)

    # The PIL image processor: the default torchvision one cannot load where torchvision is absent.
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(outdir)
    logger.info("tiny VLM written to %s (vocab %d)", outdir, len(tokenizer))
    return outdir
