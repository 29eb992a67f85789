"""Keeping tensors saved for the backward pass in host memory until the backward needs them."""

from __future__ import annotations

import torch


def _span(tensor: torch.Tensor) -> int:
    """Elements of storage from the tensor's first element to its last (gaps of a padded layout included)."""
    return 1 + sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))


def _pack(tensor: torch.Tensor) -> tuple:
    if tensor.numel() == 0:
        return tensor.device, tensor
    # One flat copy of the storage the tensor covers, so the backward gets back the saved strides: a
    # compiled block's backward asserts the layouts its forward saw, and
    # ``torch.autograd.graph.save_on_cpu`` would hand back a contiguous tensor.
    flat = tensor.as_strided((_span(tensor),), (1,))
    host = torch.empty(flat.shape, dtype=tensor.dtype, pin_memory=tensor.is_cuda)
    host.copy_(flat)
    return tensor.device, host, tensor.shape, tensor.stride()


def _unpack(packed: tuple) -> torch.Tensor:
    if len(packed) == 2:
        return packed[1]
    device, host, shape, stride = packed
    return host.to(device, non_blocking=True).as_strided(shape, stride)


def offload_saved_tensors() -> torch.autograd.graph.saved_tensors_hooks:
    """A context in which the tensors autograd saves are copied to (pinned) host memory, layouts kept.

    A copy is made on every device, CPU included, so that the same code runs in tests without a GPU.
    """
    return torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)
