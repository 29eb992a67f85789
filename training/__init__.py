"""Fine-tuning the shot-aware Wan DiT from curated shards.

Entry points: ``python -m training.train`` (also under ``torchrun`` or ``--ray-workers N``),
``python -m training.cache`` (latent cache), ``python -m training.export`` (safetensors),
``python -m training.generate`` (prompt + cuts -> mp4) and ``python -m training.evaluate`` (shot-cut accuracy).

Modules, one job each: ``config`` (dataclasses + YAML), ``data`` (shard stream -> batches), ``prompt``
(HoloCine prompt spans as tensors; the format is ``curation.prompt_format``), ``video`` (decode, bucket, mp4), ``encoders`` (Wan VAE, umT5), ``flow``
(flow-matching noise and timesteps), ``parallel`` (process group, FSDP2), ``lora``, ``checkpointing``
(DCP + export), ``metrics``, ``train`` (the loop), ``cache``, ``export``, ``ray_launch``,
``generate``, ``evaluate``, ``validation_video`` (transition control during training).
"""
