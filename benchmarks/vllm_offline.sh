#!/usr/bin/env bash
# vLLM for a GPU machine that reaches no package registry (an air-gapped node, or the lent GPU
# machine the captioning benchmark runs on), carried as one xz bundle cut into parts.
#
# The machine is assumed to have CPython 3.12 with torch 2.11 (CUDA 13), transformers >= 5.5,
# numpy, pillow, opencv and the other common packages already; the bundle brings vLLM, the
# packages it imports that such a machine lacks, and this project's own (Ray, PyAV, ...), pinned
# in benchmarks/vllm_offline_pins.txt. Heavy optional kernels (FlashInfer and its 458 MB of cubins,
# CUTLASS DSL, TileLang, NIXL, video codecs) are left out: vLLM falls back to its own kernels.
#
#   bash benchmarks/vllm_offline.sh build OUT [PART_MB]    # where PyPI and a python3.12 are ($PYTHON)
#       downloads the pinned wheels (CPython 3.12, x86-64), installs them into OUT/site, packs that
#       with xz and cuts it into OUT/parts/vllm-site.tar.xz.NN of PART_MB MiB (default 62: a part and a
#       small checkout fit one 64 MiB transfer).
#   bash benchmarks/vllm_offline.sh unpack PARTS SITE      # on the GPU machine
#       joins PARTS/vllm-site.tar.xz.* and unpacks into SITE; then:
#       export PYTHONPATH=SITE VLLM_USE_FLASHINFER_SAMPLER=0   (vLLM's sampler imports FlashInfer otherwise)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pins="$here/vllm_offline_pins.txt"
# pip checks each wheel's Requires-Python against the interpreter it runs on: use a 3.12 one.
python="${PYTHON:-python3.12}"

build() {
    local out="$1" part_mb="${2:-60}"
    mkdir -p "$out/wheels" "$out/parts"
    "$python" -m pip download --quiet --no-deps --only-binary=:all: --dest "$out/wheels" \
        --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none \
        $(for n in 17 24 26 27 28 31 34 35; do echo --platform "manylinux_2_${n}_x86_64"; done) \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform linux_x86_64 --platform any \
        --requirement "$pins"
    rm -rf "$out/site"
    "$python" -m pip install --quiet --no-deps --no-compile --target "$out/site" "$out"/wheels/*.whl
    rm -f "$out"/parts/vllm-site.tar.xz.*
    tar -C "$out/site" -cf - . | xz -T0 -6 | split -b "${part_mb}M" -d - "$out/parts/vllm-site.tar.xz."
    du -sh "$out/site" "$out/parts"
    ls -l "$out/parts"
}

unpack() {
    local parts="$1" site="$2"
    mkdir -p "$site"
    cat "$parts"/vllm-site.tar.xz.* | xz -d | tar -C "$site" -xf -
    echo "unpacked into $site: $(du -sh "$site" | cut -f1)"
}

case "${1:-}" in
    build) shift; build "$@" ;;
    unpack) shift; unpack "$@" ;;
    *) echo "usage: $0 build OUT [PART_MB] | unpack PARTS SITE" >&2; exit 2 ;;
esac
