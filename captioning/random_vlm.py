"""A random-weight Qwen2.5-VL with the real architecture, saved as an ordinary Hugging Face model folder.

    python -m captioning.random_vlm --size 7b --out DIR [--device cuda] [--seed 0]

Captioning throughput depends on the model's shapes, not on its weights, and no model hub is
reachable where we benchmark; so this builds Qwen2.5-VL-7B-Instruct (or 3B, or a tiny one for CPU
tests) from its real configuration with random normal weights, and writes what ``transformers``
(``AutoProcessor`` + ``AutoModelForImageTextToText``) and vLLM load: config, safetensors shards,
generation config, tokenizer, image and video processor configs, and the real chat template.

The tokenizer is a small byte-level BPE trained here with Qwen2's pre-tokenizer and special tokens,
so prompts take about as many tokens as with the real one. The model keeps the real vocabulary
size, so its LM head and sampling cost what the real ones do; its embedding is simply larger than
the tokenizer (the real model's is too, by a few hundred rows). Captions are noise;
constrained decoding still makes them schema-valid. Qwen2-VL's processor needs torchvision in
transformers 5.x (its video processor), so the folder loads with ``AutoProcessor`` only where
torchvision is installed; the tokenizer, model and image processor load without it.
"""

from __future__ import annotations

import argparse
import json
import logging
import string
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast, Qwen2_5_VLConfig

logger = logging.getLogger(__name__)

Size = Literal["7b", "3b", "tiny"]

PAD = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
VIDEO_PAD = "<|video_pad|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END, VISION_START, VISION_END, "<|vision_pad|>", IMAGE_PAD, VIDEO_PAD]

# Frames are sent at most 448 px on their long side; a smaller ceiling than the real 12.8 Mpx also
# keeps vLLM's memory profiling (run on the largest image the processor allows) realistic.
MIN_PIXELS = 56 * 56
MAX_PIXELS = 448 * 448
# The BPE's target size; it learns fewer merges (about 2300) from the text it is trained on.
TOKENIZER_VOCAB = 4096

# Qwen2.5-VL-7B-Instruct's config.json. 3B and tiny change the text model and the vision output width.
_TEXT_7B: dict[str, Any] = {
    "vocab_size": 152064,
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 128000,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "rope_theta": 1000000.0,
}
_VISION: dict[str, Any] = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_channels": 3,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
    "hidden_act": "silu",
}
# text overrides, vision overrides, tied embeddings
_SIZES: dict[str, tuple[dict[str, Any], dict[str, Any], bool]] = {
    "7b": ({}, {}, False),
    "3b": (
        {"vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 11008, "num_hidden_layers": 36,
         "num_attention_heads": 16, "num_key_value_heads": 2},
        {"out_hidden_size": 2048},
        True,
    ),
    # Head size 16: the three M-RoPE sections must add up to half of it. The vocabulary stays larger
    # than the tokenizer, as in the real sizes, but small enough to sample quickly on a CPU.
    "tiny": (
        {"vocab_size": TOKENIZER_VOCAB, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2,
         "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]}},
        {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2, "out_hidden_size": 64,
         "fullatt_block_indexes": [1]},
        False,
    ),
}

# Qwen2.5-VL-7B-Instruct's chat template, verbatim: ChatML, each image part (``{"type": "image"}``
# or an OpenAI ``image_url`` part) becomes <|vision_start|><|image_pad|><|vision_end|>, which the
# processor expands to one <|image_pad|> per merged 28x28 patch.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Qwen2's pre-tokenizer split: words with their leading space, single digits, punctuation runs.
_QWEN2_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# Caption-like English, so that answers tokenize into words and word pieces rather than bytes.
_CAPTION_LINES = """\
Medium shot of a grey-haired man in a blue coat opening a wooden door, looking over his shoulder.
Close-up of a young woman with long dark hair and a red scarf, smiling as she reads a letter.
Wide shot of a quiet city street at night, wet asphalt reflecting neon signs and passing cars.
A small kitchen in the early morning, warm light through the window, steam rising from a kettle.
Two children run across a green field toward a white farmhouse under a cloudy sky.
Over-the-shoulder shot of an old woman talking to a bearded man at a cafe table.
Low angle shot of a tall building, the camera tilts up slowly to reveal a helicopter.
Tracking shot following a cyclist along a river path lined with autumn trees.
Extreme close-up of hands typing on a laptop keyboard in a dim office.
Aerial view of a beach with blue waves, yellow umbrellas and people walking on the sand.
A middle-aged man with glasses and a brown jacket sits alone on a train, staring out the window.
A teenage girl in a black hoodie walks down a school corridor, holding her phone.
Static wide shot of a living room: a sofa, a lamp, a bookshelf and a sleeping dog.
Handheld shot, the camera moves forward through a crowded market full of fruit stalls.
Slow dolly in on a soldier standing in the rain, his face lit by a flashing red light.
A chef in a white uniform chops vegetables quickly on a steel counter in a busy restaurant.
Medium close-up of a police officer speaking into a radio beside a parked car.
The camera pans left across a mountain lake at sunset, pink clouds over dark pine forest.
Two friends laugh at a party, colourful lights behind them, music and dancing people.
Point of view shot from a car driving along a desert highway, the sun low on the horizon.
A nurse checks a patient in a hospital bed, monitors beeping, soft blue light.
An elderly couple holds hands on a park bench, pigeons pecking at bread crumbs.
Wide shot, slow zoom out: a lonely house in the snow, smoke from the chimney.
A boy with curly blond hair throws a ball to a brown dog in the backyard.
A businesswoman in a grey suit enters an elevator and presses a button.
The scene is set in a dark forest; fog drifts between the trees as a figure approaches.
Interior of a church, candles burning, a priest walks toward the altar.
A musician plays the piano on a stage, a single spotlight on him, the audience in shadow.
Rack focus from a glass of wine on the table to a woman standing by the balcony door.
Crane shot rising above a stadium full of fans waving flags and cheering.
close-up, static; medium shot, slow pan right; wide shot, handheld; long shot, tracking left
establishing shot, tilt down; two-shot, push in; insert shot; dutch angle; bird's-eye view
morning, afternoon, evening, night, dawn, dusk; bright, dark, warm, cold, tense, calm, happy, sad
he she they his her their is are was walks runs sits stands looks turns holds opens closes
A young man in a green shirt repairs an old motorcycle in a garage while rain falls outside.
Close-up of a cat sleeping on a windowsill, sunlight warming its orange fur.
A fisherman pulls a net onto a small boat as seagulls circle above the harbour.
Medium shot of a doctor explaining an x-ray to a worried mother and her son.
A group of students study together in a library, books and notebooks spread across a long table.
Wide shot of a snowy village street, children build a snowman while parents watch from a porch.
A woman in a yellow raincoat waits at a bus stop, checking her watch, traffic splashing past.
Close-up of a painter's brush adding blue strokes to a canvas in a bright studio.
A man and a woman argue in a narrow hallway, she points at the door and he shakes his head.
Night exterior: firefighters spray water on a burning warehouse, sparks and smoke fill the sky.
An athlete sprints around a red running track, the camera tracks beside her at full speed.
A waiter carries a tray of drinks through a noisy bar, glasses clinking, people shouting.
Slow motion shot of water drops falling from a leaf into a puddle.
A farmer drives a tractor across a golden wheat field under a clear summer sky.
Inside a spaceship, an astronaut floats past glowing control panels and small round windows.
A detective in a long coat examines footprints in the mud with a flashlight.
A toddler stacks colourful wooden blocks on a carpet, then knocks them over and giggles.
A couple dances slowly in an empty ballroom, chandeliers sparkling above them.
Medium shot of a mechanic wiping oil from his hands with a rag, a truck behind him.
The camera circles around a bride and groom as confetti falls at a wedding.
A hiker climbs a rocky trail, breathing hard, a valley opening up below.
A grandmother bakes bread, flour on her apron, a radio playing on the shelf.
Security footage style shot of an empty parking garage, a figure runs between cars.
A horse gallops along a beach at sunrise, waves breaking, sand flying from its hooves.
A surgeon in a mask and gloves leans over an operating table under bright lamps.
Teenagers skateboard in a concrete park covered with graffiti, one falls and laughs.
A lawyer stands up in a courtroom and speaks to the judge, the jury listening.
A street vendor grills meat on skewers, flames and smoke, customers waiting in line.
An office at night: a tired woman rubs her eyes in front of two glowing computer screens.
Underwater shot of a diver swimming past coral and schools of bright tropical fish.
A boxer punches a heavy bag in a sweaty gym, his coach shouting instructions.
A family eats dinner around a kitchen table, passing plates, a baby in a high chair.
A soldier reads a letter in a trench, mud on his helmet, distant explosions.
A woman jogs across a bridge in the fog, headphones on, a river below.
A crowd of protesters marches down an avenue carrying signs and banners.
A little girl feeds ducks at a pond, her father kneeling beside her.
Through a rainy windshield, the wipers sweep back and forth at a red traffic light.
A scientist pours a green liquid from a flask into a test tube in a laboratory.
A barber trims a customer's beard, mirrors and scissors, an old radio in the corner.
A king sits on a golden throne in a stone hall lit by torches, guards at the doors.
A pilot checks instruments in a cockpit as the plane climbs through white clouds.
A student nervously presents in front of a classroom, a teacher taking notes.
A woman plants flowers in her garden, kneeling on the grass with muddy gloves.
Cars race around a corner of a track, tyres smoking, the crowd on its feet.
A man feeds coins into a vending machine in a subway station late at night.
A dancer practises alone in a mirrored studio, spinning and jumping.
An ambulance speeds through an intersection, sirens wailing, lights flashing.
A photographer adjusts a camera on a tripod, aiming at a waterfall in the jungle.
A child sleeps in bed with a teddy bear, moonlight through the curtains.
young old little tall short thin heavy strong tired angry scared surprised curious serious
shirt jacket coat dress skirt jeans trousers suit uniform sweater hat cap boots shoes sneakers
hair beard moustache glasses earrings necklace bag backpack umbrella gloves scarf tie belt watch
blond brunette bald curly straight short-haired long-haired grey white black brown red blue
green yellow orange purple pink golden silver pale tanned freckled wrinkled muscular slim
house apartment room bedroom bathroom kitchen office school hospital church restaurant cafe bar
shop store market street road bridge river lake sea ocean beach forest mountain desert field
garden park city town village station airport train bus car truck boat ship plane bicycle
day night morning evening sunrise sunset rain snow fog wind storm sun moon stars sky clouds
walks runs jumps sits stands lies sleeps wakes eats drinks cooks reads writes talks speaks
shouts whispers laughs cries smiles frowns nods waves points looks glances stares watches
enters leaves arrives returns follows chases escapes hides searches finds picks drops throws
catches pushes pulls carries lifts opens closes knocks rings calls answers hugs kisses fights
slowly quickly suddenly gently carefully quietly loudly together alone behind beside between
"""

# Enough JSON to learn its punctuation runs; numbers appear in the shot fields.
_JSON_LINES = [
    '{"characters": {"[character1]": "a woman in a red coat"}, "global_caption": "A quiet street.",',
    '"shots": [{"caption": "Medium shot of [character1] walking.", "camera": "medium shot, static",',
    '"characters": ["[character1]", "[character2]"]}]} {} [] "start_frame": 0, "end_frame": 37}',
]


def _training_text() -> list[str]:
    """Every printable ASCII character (so a JSON grammar can spell anything), the project's prompt
    templates, caption-like English and JSON."""
    from .prompts import PROMPTS_DIR

    prompts = [path.read_text(encoding="utf-8") for path in sorted((PROMPTS_DIR / "v1").glob("*.txt"))]
    return [string.printable, *prompts, *_CAPTION_LINES.splitlines(), *_JSON_LINES]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with Qwen2's normalizer, pre-tokenizer and special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.normalizer = normalizers.NFC()
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(_training_text(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=IM_END,
        pad_token=PAD,
        extra_special_tokens=SPECIAL_TOKENS[1:],
        chat_template=CHAT_TEMPLATE,
    )


def model_config(size: Size, tokenizer: PreTrainedTokenizerFast) -> Qwen2_5_VLConfig:
    """The real architecture of ``size``, with the special token ids of ``tokenizer``."""
    from transformers import Qwen2_5_VLConfig

    text_changes, vision_changes, tied = _SIZES[size]
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    text = {**_TEXT_7B, **text_changes, "bos_token_id": ids[PAD], "eos_token_id": ids[IM_END], "pad_token_id": ids[PAD]}
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config={**_VISION, **vision_changes},
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=tied,
    )


def _processor_configs() -> dict[str, dict[str, Any]]:
    """The image and video processor configs, written as files rather than saved from the classes:
    the processor cannot be instantiated without torchvision, and the class names stay the
    backend-neutral ones (``AutoImageProcessor`` picks torchvision where present, else PIL)."""
    common = {
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        "patch_size": _VISION["patch_size"],
        "temporal_patch_size": _VISION["temporal_patch_size"],
        "merge_size": _VISION["spatial_merge_size"],
        "image_mean": [0.48145466, 0.4578275, 0.40821073],  # OpenAI CLIP's, as in the real config
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "processor_class": "Qwen2_5_VLProcessor",
    }
    return {
        "preprocessor_config.json": {**common, "image_processor_type": "Qwen2VLImageProcessor"},
        "video_preprocessor_config.json": {**common, "video_processor_type": "Qwen2VLVideoProcessor"},
        "processor_config.json": {"processor_class": "Qwen2_5_VLProcessor"},
    }


def build_random_qwen25_vl(outdir: str | Path, size: Size = "7b", device: str = "cpu", seed: int = 0) -> Path:
    """Write a random-weight Qwen2.5-VL of ``size`` with its tokenizer and processor to ``outdir``.

    The model is created on ``device`` directly in bfloat16 (the real checkpoint's dtype): 8B
    parameters initialised in fp32 on a CPU would take minutes and 33 GB. Weights are normal with
    std 0.02 (the config's ``initializer_range``), norms ones.
    """
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    config = model_config(size, tokenizer)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=torch.bfloat16)
    eos, pad = config.text_config.eos_token_id, config.text_config.pad_token_id
    model.generation_config = GenerationConfig(
        bos_token_id=pad, eos_token_id=[eos, pad], pad_token_id=pad, do_sample=False
    )
    model.save_pretrained(outdir, max_shard_size="5GB")
    tokenizer.save_pretrained(outdir)
    for name, content in _processor_configs().items():
        (outdir / name).write_text(json.dumps(content, indent=2) + "\n")
    logger.info(
        "random Qwen2.5-VL %s: %s parameters, tokenizer of %d tokens, written to %s",
        size, f"{sum(p.numel() for p in model.parameters()):,}", len(tokenizer), outdir,
    )
    return outdir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m captioning.random_vlm", description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(_SIZES), default="7b")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the model to (created)")
    parser.add_argument("--device", default="cpu", help="where the weights are created, e.g. cuda (default: cpu)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    outdir = build_random_qwen25_vl(args.out, args.size, args.device, args.seed)
    seconds = time.perf_counter() - start
    files = {path.name: path.stat().st_size for path in sorted(outdir.iterdir()) if path.is_file()}
    print(json.dumps({"out": str(outdir), "size": args.size, "device": args.device, "seconds": round(seconds, 1),
                      "bytes": sum(files.values()), "files": files}, indent=2))


if __name__ == "__main__":
    main()
