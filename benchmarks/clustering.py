"""Joint clustering cost vs corpus size: fuse + cluster_segments on planted segment descriptors.

Each size runs in a fresh subprocess (so peak memory is that size's alone): wall time of
``fuse`` and of ``cluster_segments`` (HDBSCAN + kNN graph + noise assignment), the peak of
Python/numpy allocations (tracemalloc) and the process's peak RSS. The growth exponent is the
log-log slope of total time over size. A size that the last two sizes extrapolate
past ``--budget-s`` is skipped and said so.
Writes benchmarks/results/clustering_cpu.json.

    python benchmarks/clustering.py [--sizes 10000 20000 30000 100000] [--activities 12] [--budget-s 180] [--timeout-s 600]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CHILD = """
import json, resource, sys, time, tracemalloc
from handclust.core.clustering import cluster_segments, fuse
from handclust.config import ClusterConfig
from handclust.core.metrics import agreement
from handclust.synthetic.footage_v1 import planted_segment_descriptors
n, k = int(sys.argv[1]), int(sys.argv[2])
mods, clip_ids, truth = planted_segment_descriptors(n, k, seed=0)
cfg = ClusterConfig(backend="cpu")
tracemalloc.start()
t0 = time.perf_counter()
f = fuse(mods, clip_ids, cfg)
t1 = time.perf_counter()
c = cluster_segments(f.fused, cfg)
t2 = time.perf_counter()
_, peak = tracemalloc.get_traced_memory()
print(json.dumps({"segments": n, "fuse_s": t1 - t0, "cluster_s": t2 - t1, "total_s": t2 - t0,
                  "python_heap_peak_mib": peak / 2**20,
                  "process_rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "k": c.k, "noise_rate": c.noise_rate, "min_cluster_size": c.min_cluster_size,
                  "ari": agreement(truth, c.activity)["ari"], "backends": c.backends}))
"""


def run_size(n: int, activities: int, timeout_s: float) -> dict[str, object] | None:
    try:
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), str(activities)], capture_output=True, text=True,
                             check=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 20_000, 30_000, 100_000])
    ap.add_argument("--activities", type=int, default=12)
    ap.add_argument("--budget-s", type=float, default=180.0, help="skip a size extrapolated to take longer")
    ap.add_argument("--timeout-s", type=float, default=600.0, help="give up on a size after this long")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "clustering_cpu.json")
    args = ap.parse_args()

    rows: list[dict[str, object]] = []
    skipped: list[dict[str, object]] = []
    for n in sorted(args.sizes):
        if len(rows) >= 2:
            (n0, t0), (n1, t1) = [(float(r["segments"]), float(r["total_s"])) for r in rows[-2:]]  # type: ignore[arg-type]
            expect = t1 * (n / n1) ** (np.log(t1 / t0) / np.log(n1 / n0))
            if expect > args.budget_s:
                skipped.append({"segments": n, "reason": f"extrapolated {expect:.0f} s > budget {args.budget_s:.0f} s"})
                print(f"{n}: skipped (extrapolated {expect:.0f} s)", flush=True)
                continue
        row = run_size(n, args.activities, timeout_s=args.timeout_s)
        if row is None:
            skipped.append({"segments": n, "reason": f"did not finish within {args.timeout_s:.0f} s"})
            print(f"{n}: did not finish within {args.timeout_s:.0f} s", flush=True)
            continue
        rows.append(row)
        print(json.dumps(row), flush=True)
    slope = None
    if len(rows) >= 2:
        x = np.log([float(r["segments"]) for r in rows])  # type: ignore[arg-type]
        y = np.log([float(r["total_s"]) for r in rows])  # type: ignore[arg-type]
        slope = float(np.polyfit(x, y, 1)[0])
    result = {
        "what": "fuse + cluster_segments (sklearn HDBSCAN on 16 principal components of the fused descriptors from "
                "10k segments on, faiss-cpu kNN; above cluster.max_fit_segments=50k HDBSCAN fits on a 50k sample "
                "and the rest is placed by kNN vote) on planted descriptors: "
                f"4 modalities (64/52/16/8 dims), {args.activities} activities",
        "host": platform.node(), "cpus": __import__("os").cpu_count(), "when": time.strftime("%Y-%m-%d"),
        "rows": rows, "skipped": skipped, "time_growth_exponent": slope,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"growth exponent (log-log slope of total time): {slope}")


if __name__ == "__main__":
    main()
