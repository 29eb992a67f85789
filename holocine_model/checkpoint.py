"""Checkpoint key layouts, loading and saving.

Two layouts are understood:
  ``wan``        original Wan / DiffSynth / HoloCine names, which are this package's own parameter
                 names (``blocks.N.self_attn.q.weight``, ``blocks.N.norm3`` = cross-attention norm,
                 ``head.modulation`` ...).
  ``diffusers``  ``WanTransformer3DModel`` names (``blocks.N.attn1.to_q.weight``,
                 ``scale_shift_table`` ...). diffusers numbers the norms by position, so its ``norm2``
                 is Wan's affine cross-attention ``norm3``.

Files are read as safetensors (a single file, or a sharded set with its ``*.index.json``); other
files only through ``torch.load(weights_only=True)``. Nothing is ever unpickled.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .model import keeps_fp32

logger = logging.getLogger(__name__)

LAYOUTS = ("wan", "diffusers")

# Prefixes some tools put before the bare Wan names (ComfyUI, DiffSynth training checkpoints).
_STRIP_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "dit.")

# (wan name, diffusers name) of the top-level parameters, without ".weight" / ".bias".
_TOP_LEVEL = [
    ("patch_embedding", "patch_embedding"),
    ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    ("time_projection.1", "condition_embedder.time_proj"),
    ("head.head", "proj_out"),
    ("head.modulation", "scale_shift_table"),
]
# Same, inside "blocks.N.".
_BLOCK = [
    ("self_attn.q", "attn1.to_q"),
    ("self_attn.k", "attn1.to_k"),
    ("self_attn.v", "attn1.to_v"),
    ("self_attn.o", "attn1.to_out.0"),
    ("self_attn.norm_q", "attn1.norm_q"),
    ("self_attn.norm_k", "attn1.norm_k"),
    ("cross_attn.q", "attn2.to_q"),
    ("cross_attn.k", "attn2.to_k"),
    ("cross_attn.v", "attn2.to_v"),
    ("cross_attn.o", "attn2.to_out.0"),
    ("cross_attn.norm_q", "attn2.norm_q"),
    ("cross_attn.norm_k", "attn2.norm_k"),
    ("norm3", "norm2"),
    ("ffn.0", "ffn.net.0.proj"),
    ("ffn.2", "ffn.net.2"),
    ("modulation", "scale_shift_table"),
]
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def _split_suffix(name: str) -> tuple[str, str]:
    for suffix in (".weight", ".bias"):
        if name.endswith(suffix):
            return name[: -len(suffix)], suffix
    return name, ""


def _rename(state_dict: dict[str, torch.Tensor], src: int) -> dict[str, torch.Tensor]:
    """Rename keys from column ``src`` (0 = wan, 1 = diffusers) of the tables to the other column."""
    dst = 1 - src
    top = {pair[src]: pair[dst] for pair in _TOP_LEVEL}
    block = {pair[src]: pair[dst] for pair in _BLOCK}
    out = {}
    for name, tensor in state_dict.items():
        stem, suffix = _split_suffix(name)
        match = _BLOCK_KEY.match(stem)
        if match and match.group(2) in block:
            new = f"blocks.{match.group(1)}.{block[match.group(2)]}"
        elif stem in top:
            new = top[stem]
        else:
            raise KeyError(f"unexpected checkpoint key {name!r}")
        out[new + suffix] = tensor
    return out


def detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    """``"diffusers"`` or ``"wan"``, from the key names."""
    if any(k.startswith("condition_embedder.") or ".attn1." in k for k in state_dict):
        return "diffusers"
    return "wan"


def to_wan_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Any supported layout -> this package's (Wan) names."""
    if detect_layout(state_dict) == "diffusers":
        return _rename(state_dict, src=1)
    out = {}
    for name, tensor in state_dict.items():
        for prefix in _STRIP_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                break
        out[name] = tensor
    return out


def to_diffusers_keys(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Wan names -> diffusers names."""
    return _rename(state_dict, src=0)


class _TensorFile(dict):
    """A ``torch.load``-ed state dict behind the part of ``safe_open``'s interface used here."""

    def get_tensor(self, key: str) -> torch.Tensor:
        return self[key]


@contextlib.contextmanager
def _open_tensors(path: Path, device: str) -> Iterator[safe_open | _TensorFile]:
    """Safetensors open lazily (a tensor is read when asked for); other files only through
    ``torch.load(weights_only=True)``, whole."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt", device=device) as tensors:
            yield tensors
    else:
        yield _TensorFile(torch.load(path, map_location=device, weights_only=True))


@contextlib.contextmanager
def _open_checkpoint(path: str | Path, device: str = "cpu") -> Iterator[dict[str, safe_open | _TensorFile]]:
    """Every tensor name of a checkpoint (a file, a ``*.index.json`` of shards, or a directory holding
    one of them) with the open file that holds it."""
    path = Path(path)
    if path.is_dir():
        indexes = sorted(path.glob("*.safetensors.index.json"))
        files = sorted(path.glob("*.safetensors"))
        if len(indexes) == 1:
            path = indexes[0]
        elif len(files) == 1:
            path = files[0]
        else:
            raise FileNotFoundError(f"{path}: expected one *.safetensors or one *.safetensors.index.json")
    weight_map = json.loads(path.read_text())["weight_map"] if path.name.endswith(".index.json") else None
    files = [path.parent / shard for shard in sorted(set(weight_map.values()))] if weight_map else [path]
    with contextlib.ExitStack() as stack:
        holders = {}
        for file in files:
            tensors = stack.enter_context(_open_tensors(file, device))
            holders.update(dict.fromkeys(tensors.keys(), tensors))
        missing = set(weight_map or ()) - set(holders)
        if missing:
            raise KeyError(f"{path}: {len(missing)} indexed keys missing from the shards, e.g. {sorted(missing)[:3]}")
        yield holders


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint: a file, a ``*.index.json`` of shards, or a directory holding one of them."""
    with _open_checkpoint(path) as holders:
        return {key: tensors.get_tensor(key) for key, tensors in holders.items()}


@torch.no_grad()
def load_checkpoint(model: torch.nn.Module, path: str | Path, strict: bool = True) -> tuple[list[str], list[str]]:
    """Load Wan- or diffusers-layout weights into ``model``; returns (missing, unexpected) keys.

    Safetensors are read a tensor at a time onto the model's device, so host memory never holds the
    whole checkpoint (an A14B expert is 28 GB, read by every rank of a node).
    """
    params = model.state_dict()  # these share the parameters' storage
    device = str(next(iter(params.values())).device) if params else "cpu"
    with _open_checkpoint(path, device) as holders:
        sources = to_wan_keys({key: key for key in holders})  # our name -> the file's name
        missing, unexpected = sorted(params.keys() - sources.keys()), sorted(sources.keys() - params.keys())
        if strict and (missing or unexpected):
            raise RuntimeError(f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
        for name in params.keys() & sources.keys():
            tensor = holders[sources[name]].get_tensor(sources[name])
            if tensor.shape != params[name].shape:
                raise RuntimeError(f"{path}: {sources[name]} has shape {list(tensor.shape)}, "
                                   f"the model's {name} {list(params[name].shape)}")
            params[name].copy_(tensor)
    logger.info("loaded %d tensors from %s", len(sources), path)
    return missing, unexpected


def index_path(path: str | Path) -> Path:
    """The index ``save_checkpoint`` writes next to the shards of ``path`` (``model.safetensors.index.json``)."""
    path = Path(path)
    return path.with_name(f"{path.name}.index.json")


def save_checkpoint(
    model_or_state_dict: torch.nn.Module | dict[str, torch.Tensor],
    path: str | Path,
    layout: str = "wan",
    max_shard_bytes: int | None = None,
    dtype: torch.dtype | None = None,
) -> list[Path]:
    """Save as safetensors in ``layout``; returns the files written, the index last.

    ``path`` is a ``.safetensors`` file. With ``max_shard_bytes`` the tensors are split into
    ``{stem}-0000i-of-0000n.safetensors`` shards next to it plus ``{path}.index.json`` (the
    diffusers / transformers convention), each shard holding whole tensors up to that size.
    ``dtype`` (e.g. bf16) casts the floating-point weights except ``FP32_PARAMETERS``, which Wan
    computes in fp32; None keeps every tensor's own dtype.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}")
    state_dict = model_or_state_dict
    if isinstance(state_dict, torch.nn.Module):
        state_dict = state_dict.state_dict()
    state_dict = {k: v.detach().contiguous().cpu() for k, v in to_wan_keys(state_dict).items()}
    if dtype is not None:
        state_dict = {k: v.to(dtype) if v.is_floating_point() and not keeps_fp32(k) else v for k, v in state_dict.items()}
    if layout == "diffusers":
        state_dict = to_diffusers_keys(state_dict)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if max_shard_bytes is None:
        save_file(state_dict, str(path), metadata={"format": "pt", "layout": layout})
        return [path]

    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state_dict.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    stem = path.name[: -len(".safetensors")] if path.name.endswith(".safetensors") else path.name
    files, weight_map = [], {}
    for i, shard in enumerate(shards, start=1):
        shard_path = path.parent / f"{stem}-{i:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(shard_path), metadata={"format": "pt", "layout": layout})
        weight_map.update(dict.fromkeys(shard, shard_path.name))
        files.append(shard_path)
    total = sum(t.numel() * t.element_size() for t in state_dict.values())
    index = index_path(path)
    index.write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2))
    return files + [index]
