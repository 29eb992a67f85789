"""The driver's bookkeeping at corpus scale: plan and finish of a rerun, on local disk and on S3.

    python benchmarks/bookkeeping.py [--sizes 1000 10000 100000] [--scenes 5] [--stores local s3]

For each size, synthetic finished work (``pipelines.synthetic``: ledger parts for N videos of
``--scenes`` scenes, captioned and packed; no video bytes) is written once, a first rerun
compacts the ledger and writes the manifests and report, and then two reruns are measured, each
in a fresh process:

- nothing to do: ``plan_work`` and ``finish`` over all N inputs;
- 1 % new: as after a run that curated and captioned N/100 more videos: ``finish`` packs their
  scenes into new shards (clips are 1 KB objects here), the rest stays as it is.

Printed per size and store: plan and finish seconds, store requests (the S3 server's count; on
local disk, none), and the measuring process's peak memory. S3 is moto's server on 127.0.0.1
(``moto[server]``, in the dev extra), started here.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from curation.store import Store  # noqa: E402
from moto_server import MotoServer  # noqa: E402  (benchmarks/moto_server.py)
from pipelines.bookkeeping import finish, plan_work  # noqa: E402
from pipelines.config import PipelineConfig  # noqa: E402
from pipelines.ledger import Ledger  # noqa: E402
from pipelines.packing import write_here  # noqa: E402
from pipelines.synthetic import input_uris, write_finished  # noqa: E402

INPUTS = "s3://footage/in"


def measure(output: str, count: int) -> dict[str, float]:
    """Plan and finish a rerun over ``count`` synthetic inputs (run in a fresh process)."""
    store, uris = Store(output), input_uris(INPUTS, count)
    start = time.perf_counter()
    plan = plan_work(Ledger(store), uris, retry_failed=False)
    planned = time.perf_counter()
    assert not plan.to_curate and not plan.to_caption, "synthetic work is finished"
    summary = finish(store, uris, PipelineConfig(), False, (planned, time.time_ns()), write_here(store.url))
    done = time.perf_counter()
    return {
        "plan_s": planned - start,
        "finish_s": done - planned,
        "shards_written": summary["this_run"]["shards_written"],
        "samples": summary["samples"],
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _measured(output: str, count: int, env: dict[str, str]) -> dict[str, float]:
    command = [sys.executable, __file__, "--measure", output, "--count", str(count)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.splitlines()[-1])


def bench(size: int, scenes: int, output: str, env: dict[str, str], server: MotoServer | None) -> None:
    os.environ.update(env)
    write_finished(Store(output), input_uris(INPUTS, size), scenes_per_video=scenes)
    _measured(output, size, env)  # the first rerun compacts the ledger and writes manifests and report
    for case in ("nothing to do", "1 % new"):
        if case == "1 % new":
            new = input_uris(INPUTS, max(1, size // 100), start=size)
            write_finished(Store(output), new, scenes_per_video=scenes, packed=False)
            size += len(new)
        before = server.requests() if server else 0
        figures = _measured(output, size, env)
        requests = server.requests() - before if server else 0
        print(f"{'s3' if server else 'local':<6}{size:>9,}{size * scenes:>10,}  {case:<14}{figures['plan_s']:>8.2f}"
              f"{figures['finish_s']:>9.2f}{requests if server else '-':>10}{figures['shards_written']:>8}"
              f"{figures['peak_mb']:>9.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000], help="videos (default: %(default)s)")
    parser.add_argument("--scenes", type=int, default=5, help="scenes per video (default: %(default)s)")
    parser.add_argument("--stores", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    parser.add_argument("--measure", metavar="OUTPUT", help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.count)))
        return
    print(f"{'store':<6}{'videos':>9}{'scenes':>10}  {'rerun':<14}{'plan s':>8}{'finish s':>9}{'requests':>10}"
          f"{'shards':>8}{'peak MB':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        server = MotoServer(Path(tmp)) if "s3" in args.stores else None
        try:
            for size in args.sizes:
                for store in args.stores:
                    if store == "local":
                        output = str(Path(tmp) / f"out-{size}")
                        bench(size, args.scenes, output, dict(os.environ), None)
                        shutil.rmtree(output)
                    else:
                        bucket = f"bench-{size}"
                        env = server.env
                        os.environ.update(env)
                        import s3fs

                        s3fs.S3FileSystem.clear_instance_cache()
                        s3fs.S3FileSystem().mkdir(bucket)
                        bench(size, args.scenes, f"s3://{bucket}/out", env, server)
        finally:
            if server:
                server.stop()


if __name__ == "__main__":
    main()
