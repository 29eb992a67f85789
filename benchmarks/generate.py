"""Generation at full size on the GPU: random Wan2.1 1.3B DiT, random Wan2.1 VAE, a short random umT5.

    python benchmarks/generate.py [--frames 81] [--steps 10] [--shots 3] [--out DIR]

Builds, from configs, an encoders folder in the diffusers layout that ``training.encoders`` reads:
the Wan2.1 VAE (diffusers' ``AutoencoderKLWan`` defaults), a 2-layer 4096-wide umT5 standing in for
umT5-XXL, and the tiny tokenizer. Then runs ``python -m training.generate`` on the 1.3B preset (random
weights, bf16 on CUDA) for a multi-shot prompt and prints what it wrote and how long each part took.
Random weights give noise; the run checks shapes, dtypes, the cut grid and the mp4, and gives a speed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.encoders import load_tokenizer  # noqa: E402


def build_encoders(folder: Path) -> None:
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = load_tokenizer("tiny")
    AutoencoderKLWan().save_pretrained(folder / "vae")
    config = UMT5Config(vocab_size=len(tokenizer), d_model=4096, d_kv=64, d_ff=10240, num_layers=2, num_heads=64,
                        feed_forward_proj="gated-gelu")
    UMT5EncoderModel(config).save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--shots", type=int, default=3)
    parser.add_argument("--out", type=Path, help="where the mp4 and its JSON go (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        build_encoders(Path(tmp) / "encoders")
        built = time.perf_counter() - start
        captions = " [shot cut] ".join(f"shot {i + 1}: a red ball rolls across a wooden table" for i in range(args.shots))
        prompt = (f"[global caption] a red ball on a table. This scene contains {args.shots} shots. "
                  f"[per shot caption] {captions}")
        out = (args.out or Path(tmp)) / "generated.mp4"
        command = [sys.executable, "-m", "training.generate", "--prompt", prompt, "--out", str(out), "--preset", "wan2.1-1.3b",
                   "--encoders", str(Path(tmp) / "encoders"), "--frames", str(args.frames), "--steps", str(args.steps)]
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        seconds = time.perf_counter() - start
        print(done.stderr[-3000:])
        if done.returncode:
            raise SystemExit(done.returncode)
        record = json.loads(out.with_suffix(".json").read_text())
        print(json.dumps({"encoders_built_s": round(built, 1), "generate_s": round(seconds, 1), "frames": args.frames,
                          "steps": args.steps, "mp4_bytes": out.stat().st_size,
                          **{k: record[k] for k in record if k in ("shot_cut_frames", "num_frames", "seconds")}}))


if __name__ == "__main__":
    main()
