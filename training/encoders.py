"""The frozen encoders: Wan VAE (diffusers' ``AutoencoderKLWan``) and umT5 (transformers' ``UMT5EncoderModel``).

``source`` is one of
  * a diffusers-format Wan folder: ``vae/``, ``text_encoder/``, ``tokenizer/`` (Wan2.1: 16-channel VAE;
    Wan2.2 TI2V-5B: the 48-channel VAE);
  * Wan's original folder: ``Wan2.1_VAE.pth``, ``models_t5_umt5-xxl-enc-bf16.pth`` and the tokenizer
    folder ``google/umt5-xxl/`` (the Wan2.2 48-channel VAE from original files is not supported: use
    the diffusers folder);
  * ``"tiny"``: random tiny encoders (4 latent channels, 24-dim text) and a tokenizer trained on a few
    lines, the same in every process; for tests and CPU smoke runs.

Latents are normalised as Wan does, per channel ``(mu - mean) / std`` with the VAE config's statistics.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

WAN_VAE_FILE = "Wan2.1_VAE.pth"
WAN_T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"
WAN_TOKENIZER_DIR = "google/umt5-xxl"
TINY_LATENT_CHANNELS = 4
TINY_TEXT_DIM = 24
_TINY_LINES = [
    "[global caption] [character1] a woman in a red coat walks through a quiet city street at night.",
    "This scene contains 3 shots. [per shot caption] medium shot of the woman [shot cut] close up of her face",
    "[shot cut] wide shot of the street with cars, rain and neon lights, the camera pans slowly to the left",
    "a man and a child sit by the sea, waves, sand, sunset, slow dolly in, static camera, handheld",
    "colourful moving textures, abstract shapes drifting, bright blue green orange purple patterns",
]


class Encoders:
    """VAE + text encoder on one device, frozen; everything runs under ``no_grad``."""

    def __init__(self, vae, text_encoder, tokenizer, device: torch.device, dtype: torch.dtype) -> None:
        for module in (vae, text_encoder):
            module.to(device).eval().requires_grad_(False)
            if dtype != torch.float32:  # a no-op cast still makes diffusers warn
                module.to(dtype)
        self.vae, self.text_encoder = vae, text_encoder
        self.tokenizer = tokenizer
        self.device, self.dtype = device, dtype
        shape = (1, -1, 1, 1, 1)
        self.mean = torch.tensor(vae.config.latents_mean, device=device).view(shape)
        self.std = torch.tensor(vae.config.latents_std, device=device).view(shape)

    @property
    def latent_channels(self) -> int:
        return self.vae.config.z_dim

    @torch.no_grad()
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """[B, 3, F, H, W] in [-1, 1] -> normalised fp32 latents [B, C, (F-1)/4+1, H/s, W/s]."""
        mu = self.vae.encode(video.to(self.device, self.dtype)).latent_dist.mean.float()
        return (mu - self.mean) / self.std

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents -> video [B, 3, F, H, W] in [-1, 1]."""
        z = latents.to(self.device).float() * self.std + self.mean
        return self.vae.decode(z.to(self.dtype)).sample.float().clamp(-1, 1)

    @torch.no_grad()
    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[B, L] ids -> fp32 umT5 states [B, L, D], zero past each prompt's end (as Wan does)."""
        mask = attention_mask.to(self.device)
        states = self.text_encoder(input_ids=input_ids.to(self.device), attention_mask=mask).last_hidden_state
        return states.float() * mask[..., None]


def load_tokenizer(source: str):
    """The umT5 tokenizer (fast, for character offsets) of ``source``."""
    from transformers import AutoTokenizer

    if source == "tiny":
        return _tiny_tokenizer()
    root = Path(source)
    for folder in (root / "tokenizer", root / WAN_TOKENIZER_DIR):
        if folder.is_dir():
            return AutoTokenizer.from_pretrained(folder, use_fast=True)
    raise FileNotFoundError(f"{source}: no tokenizer/ (diffusers) or {WAN_TOKENIZER_DIR}/ (Wan) folder")


def load_encoders(source: str, device: torch.device, dtype: torch.dtype) -> Encoders:
    tokenizer = load_tokenizer(source)
    if source == "tiny":
        vae, text_encoder = _tiny_models(len(tokenizer))
        return Encoders(vae, text_encoder, tokenizer, device, dtype)
    from diffusers import AutoencoderKLWan
    from transformers import UMT5EncoderModel

    root = Path(source)
    if (root / "vae").is_dir():
        vae = AutoencoderKLWan.from_pretrained(root / "vae")
        text_encoder = UMT5EncoderModel.from_pretrained(root / "text_encoder")
    elif (root / WAN_VAE_FILE).is_file():
        vae = _wan_original_vae(root / WAN_VAE_FILE)
        text_encoder = _wan_original_t5(root / WAN_T5_FILE)
    else:
        raise FileNotFoundError(f"{source}: neither a diffusers Wan folder (vae/) nor Wan's original files ({WAN_VAE_FILE})")
    log.info("encoders from %s: VAE z_dim %d, text encoder %s", source, vae.config.z_dim, text_encoder.config.d_model)
    return Encoders(vae, text_encoder, tokenizer, device, dtype)


def _wan_original_vae(path: Path):
    from diffusers import AutoencoderKLWan
    from diffusers.loaders.single_file_utils import convert_wan_vae_to_diffusers

    vae = AutoencoderKLWan()  # the defaults are Wan2.1's VAE
    state = torch.load(path, map_location="cpu", weights_only=True)
    vae.load_state_dict(convert_wan_vae_to_diffusers(state), strict=True)
    return vae


def wan_t5_to_transformers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan's ``T5Encoder`` names -> ``UMT5EncoderModel`` names (Wan's gate is ``wi_0``, its fc1 ``wi_1``)."""
    per_block = {
        "attn.q": "layer.0.SelfAttention.q", "attn.k": "layer.0.SelfAttention.k",
        "attn.v": "layer.0.SelfAttention.v", "attn.o": "layer.0.SelfAttention.o",
        "pos_embedding.embedding": "layer.0.SelfAttention.relative_attention_bias",
        "norm1": "layer.0.layer_norm", "norm2": "layer.1.layer_norm",
        "ffn.gate.0": "layer.1.DenseReluDense.wi_0", "ffn.fc1": "layer.1.DenseReluDense.wi_1",
        "ffn.fc2": "layer.1.DenseReluDense.wo",
    }
    out = {}
    for name, tensor in state.items():
        stem = name.removesuffix(".weight")
        if stem == "token_embedding":
            out["shared.weight"] = tensor
            out["encoder.embed_tokens.weight"] = tensor
        elif stem == "norm":
            out["encoder.final_layer_norm.weight"] = tensor
        else:
            _, index, rest = stem.split(".", 2)
            out[f"encoder.block.{index}.{per_block[rest]}.weight"] = tensor
    return out


def umt5_xxl_config():
    from transformers import UMT5Config

    return UMT5Config(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                      relative_attention_num_buckets=32, relative_attention_max_distance=128,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False)


def _wan_original_t5(path: Path):
    from transformers import UMT5EncoderModel

    model = UMT5EncoderModel(umt5_xxl_config())
    model.load_state_dict(wan_t5_to_transformers(torch.load(path, map_location="cpu", weights_only=True)))
    return model


def _tiny_models(vocab_size: int):
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    # Same random weights in every process (ranks, loader workers, the cache and the trainer).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1234)
        vae = AutoencoderKLWan(base_dim=8, z_dim=TINY_LATENT_CHANNELS, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                               temperal_downsample=[False, True, True],
                               latents_mean=[0.0] * TINY_LATENT_CHANNELS, latents_std=[0.5] * TINY_LATENT_CHANNELS)
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=vocab_size, d_model=TINY_TEXT_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
            relative_attention_num_buckets=8, feed_forward_proj="gated-gelu"))
    return vae, text_encoder


def _tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    alphabet = [chr(c) for c in range(33, 127)]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "</s>", "<unk>"],
                                  initial_alphabet=alphabet, show_progress=False)
    core.train_from_iterator(_TINY_LINES, trainer=trainer)
    core.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
