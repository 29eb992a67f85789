"""Fine-tuning the shot-aware Wan DiT from curated shards.

Entry points: ``python -m training.train`` (also under ``torchrun`` or ``--ray-workers N``),
``python -m training.cache`` (latent cache) and ``python -m training.export`` (safetensors).

Modules, one job each: ``config`` (dataclasses + YAML), ``data`` (shard stream -> batches), ``prompt``
(HoloCine prompt token spans), ``video`` (decode, bucket, mp4), ``encoders`` (Wan VAE, umT5), ``flow``
(flow-matching noise and timesteps), ``parallel`` (process group, FSDP2), ``lora``, ``checkpointing``
(DCP + export), ``metrics``, ``train`` (the loop), ``cache``, ``export``, ``ray_launch``.
"""
