"""Throughput of ``ncsn-sample --engine ray`` with 1 vs 2 workers on this machine, next to the local engine.

    .venv/bin/ncsn-export --output /tmp/mnist --no-validate
    .venv/bin/python bench/bench_ray.py --export /tmp/mnist --num-samples 64 --batch-size 16

Every configuration samples the same seeds S .. S+N-1 and the script checks the outputs are identical.
Each Ray worker is one actor with 1 CPU and a 1-thread onnxruntime session; the local baseline is one
process with a 1-thread session (the same per-worker compute), so ``ray 1 worker / local`` is Ray's
overhead and ``ray 2 workers / ray 1 worker`` the scaling. Ray start-up (``ray.init``) is reported
separately; the per-run times include actor creation and session opening. ``CPU s / sample`` is the
process CPU time the actors spent per sample (the per-worker cost, independent of how busy the machine
is) and ``cores used`` = actor CPU seconds / wall seconds: on a shared machine it shows how much CPU the
workers actually got. Results: ``bench/results/ray_throughput.json``.

N nodes: the work items are independent (a sample depends only on its seed), so a cluster of W workers
gives about W x the per-worker rate measured here, until one of these limits: (1) every sample travels
to the driver, which writes the .npy / shards: an MNIST sample is 3.1 KB, so 100 MB/s into the driver is
~30k samples/s, far above a CPU worker's rate but a limit for tiny models; (2) actor start-up (seconds,
once per worker) and the tail of the last items, which ``--shard-size`` should keep well below N / W;
(3) the export directory must be at the same path on every node (shared file system or a copy).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "runtime"))

from ncsn_runtime import distributed  # noqa: E402
from ncsn_runtime.pipeline import NCSNPipeline  # noqa: E402


class TimedActor(distributed.SamplerActor):
    """SamplerActor that appends each item's wall and process-CPU seconds to ``CPU_LOG`` (a JSON line per item)."""

    log = ""

    def __call__(self, batch):
        wall, cpu = time.perf_counter(), time.process_time()
        out = super().__call__(batch)
        with open(self.log, "a") as handle:
            record = {"pid": os.getpid(), "wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
            handle.write(json.dumps(record) + "\n")
        return out


def local_run(export: Path, num_samples: int, seed: int, batch_size: int) -> tuple[np.ndarray, float, float]:
    """(samples, wall seconds, process CPU seconds) of one in-process run with a 1-thread session."""
    start, cpu = time.perf_counter(), time.process_time()
    pipe = NCSNPipeline.from_pretrained(export, provider="cpu", intra_op_threads=1)
    chunks = [pipe(batch_size=min(batch_size, num_samples - offset), seed=seed + offset, mode="fused", output_type="raw",
                   progress=False).images for offset in range(0, num_samples, batch_size)]
    return np.concatenate(chunks), time.perf_counter() - start, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--export", required=True, type=Path, help="an ncsn-export directory")
    parser.add_argument("--num-samples", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16, help="samples per onnxruntime call")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs per configuration (best is reported)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "ray_throughput.json")
    args = parser.parse_args()

    import ray

    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
    init_seconds = time.perf_counter() - start
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import this script
    log = Path(tempfile.mkdtemp(prefix="bench-ray-")) / "items.jsonl"
    TimedActor.log = str(log)
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    identical: dict[tuple[str, int], bool] = {}
    reference = None
    try:
        for _ in range(args.repeats):  # interleaved, best of: the machine is shared
            samples, seconds, cpu = local_run(args.export, args.num_samples, args.seed, args.batch_size)
            reference = samples if reference is None else reference
            key = ("local (1 process, 1 thread)", 1)
            runs.setdefault(key, []).append({"seconds": seconds, "cpu_seconds": cpu})
            identical[key] = identical.get(key, True) and bool(np.array_equal(samples, reference))
            for workers in args.workers:
                log.write_text("")
                start = time.perf_counter()
                samples = distributed.generate(args.export, args.num_samples, args.seed, num_workers=workers,
                                               batch_size=args.batch_size, mode="fused", provider="cpu", progress=False,
                                               actor_class=TimedActor)
                seconds = time.perf_counter() - start
                items = [json.loads(line) for line in log.read_text().splitlines()]
                key = ("ray", workers)
                runs.setdefault(key, []).append({"seconds": seconds, "cpu_seconds": sum(i["cpu"] for i in items),
                                                 "actors": len({i["pid"] for i in items})})
                identical[key] = identical.get(key, True) and bool(np.array_equal(samples, reference))
    finally:
        ray.shutdown()
    rows = []
    for key, measured in runs.items():
        best = min(measured, key=lambda run: run["seconds"])
        rows.append({"engine": key[0], "workers": key[1], **best, "all_seconds": [run["seconds"] for run in measured],
                     "identical": identical[key], "samples_per_second": args.num_samples / best["seconds"],
                     "cpu_seconds_per_sample": best["cpu_seconds"] / args.num_samples,
                     "cores_used": best["cpu_seconds"] / best["seconds"]})
    ray_one = next((r for r in rows if r["engine"] == "ray" and r["workers"] == 1), None)

    print(f"{args.num_samples} samples of {args.export.name}, batch {args.batch_size}, {os.cpu_count()} CPUs (load average "
          f"{os.getloadavg()[0]:.1f}); ray.init {init_seconds:.2f} s (not included)")
    print("| engine | workers | best seconds | samples/s | vs ray 1 worker | CPU s / sample | cores used | identical |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        ratio = f"{row['samples_per_second'] / ray_one['samples_per_second']:.2f}x" if ray_one else "-"
        print(f"| {row['engine']} | {row['workers']} | {row['seconds']:.2f} | {row['samples_per_second']:.2f} | {ratio} | "
              f"{row['cpu_seconds_per_sample']:.3f} | {row['cores_used']:.2f} | {row['identical']} |")
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "export": str(args.export),
              "num_samples": args.num_samples, "batch_size": args.batch_size, "repeats": args.repeats, "cpus": os.cpu_count(),
              "platform": platform.platform(), "ray": ray.__version__, "ray_init_seconds": init_seconds, "rows": rows,
              "load_average_at_end": os.getloadavg(),
              "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"saved {args.output}")
    return 0 if all(row["identical"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
