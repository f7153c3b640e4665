"""Benchmark: what Ray costs a study, and where a two-node cluster puts its jobs.

1. 10 one-epoch jobs (one tiny variant at seeds 0-9, generated data) in this process, then
   on a local Ray with one worker of the same threads: the difference, less Ray's start-up,
   over 10 is the overhead per job (task dispatch, a worker importing torch and nnlab, the
   epoch reports through the driver's board).
2. The same 10 jobs on a two-node cluster on this machine (`ray.cluster_utils.Cluster`: two
   raylets, one CPU each, as two `ray start` processes make): how many jobs ran on each
   node, read from each run's summary.json (`node`).

    python benchmarks/ray_overhead.py [--json benchmarks/results/ray_overhead.json]
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
import time
from pathlib import Path

import ray
import torch
from provenance import provenance
from rich.console import Console

from nnlab.executor import InProcess, Job, RayExecutor, Resources
from nnlab.experiment import resolve_config
from nnlab.host import reference_speeds

QUIET = Console(quiet=True)


def jobs(root: Path, n: int = 10) -> list[Job]:
    from nnlab import tasks

    out = []
    for seed in range(n):
        cfg = resolve_config("similarity", "lstm", data="generated", epochs=1,
                             sets=["data.limit=300", f"train.seed={seed}"])
        cfg.data.path = tasks.require_data(tasks.get("similarity"), cfg.data.path)
        out.append(Job(f"seed {seed}", root / f"seed{seed}", cfg))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default="benchmarks/results/ray_overhead.json")
    args = parser.parse_args()
    host = reference_speeds()
    threads = torch.get_num_threads()
    result: dict = {"provenance": provenance(host), "host": host, "jobs": 10, "threads": threads}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # the data generated and cached, torch warmed up, before any timing
        InProcess(QUIET, progress=False).run_all(jobs(root / "warm", 1))

        start = time.perf_counter()
        InProcess(QUIET, progress=False).run_all(jobs(root / "serial"))
        result["serial_seconds"] = round(time.perf_counter() - start, 2)

        start = time.perf_counter()
        executor = RayExecutor(Resources(workers=1, threads=threads), QUIET, progress=False)
        result["ray_start_seconds"] = round(time.perf_counter() - start, 2)
        start = time.perf_counter()
        done = executor.run_all(jobs(root / "ray"))
        result["ray_jobs_seconds"] = round(time.perf_counter() - start, 2)
        executor.close()
        assert not any(d.error for d in done), [d.error for d in done]
        result["overhead_per_job_seconds"] = round(
            (result["ray_jobs_seconds"] - result["serial_seconds"]) / 10, 3)

        from ray.cluster_utils import Cluster

        head = {"num_cpus": 1, "include_dashboard": False, "object_store_memory": 80 << 20}
        cluster = Cluster(initialize_head=True, head_node_args=head)
        cluster.add_node(num_cpus=1, object_store_memory=80 << 20)
        ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False,
                 logging_level="error")
        start = time.perf_counter()
        executor = RayExecutor(Resources(workers=2, threads=1, address=cluster.address), QUIET,
                               progress=False)
        done = executor.run_all(jobs(root / "cluster"))
        result["two_node_seconds"] = round(time.perf_counter() - start, 2)
        executor.close()
        ray.shutdown()
        cluster.shutdown()
        nodes = collections.Counter(json.loads((d.job.path / "summary.json").read_text())["node"][:8]
                                    for d in done)
        result["two_node_jobs_per_node"] = dict(nodes)
    console = Console()
    console.print(f"host: {host['cpu']}, {threads} threads, fp32 matmul "
                  f"{host['matmul_fp32_gflops']} GFLOP/s")
    console.print(f"10 one-epoch jobs in this process: {result['serial_seconds']:.1f} s")
    console.print(f"Ray start (local, 1 worker): {result['ray_start_seconds']:.1f} s; the same jobs on "
                  f"it: {result['ray_jobs_seconds']:.1f} s; overhead per job "
                  f"{result['overhead_per_job_seconds']:.2f} s")
    console.print(f"two-node cluster (1 CPU each): {result['two_node_seconds']:.1f} s; jobs per node "
                  f"{result['two_node_jobs_per_node']}")
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
