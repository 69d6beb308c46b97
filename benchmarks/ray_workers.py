"""Pipeline throughput with 1 vs 2 Ray workers on this machine.

Renders N synthetic clips (default 4 x 1 min, 640x360 @ 15 fps), then for each worker count n
runs the per-clip stages through the Ray runner on a fresh local instance with n logical CPUs,
in a child process pinned to n physical cores (``sched_setaffinity``; Ray's raylet and workers
inherit it). Ray's CPU counts are logical only: without the pinning a "1 CPU" instance still
spreads decoder and OpenCV threads over every core, and 1 vs 2 would measure nothing. Reports
seconds of footage per second of wall time and the speed-up, Ray's start-up included, as a user's
run has it. Writes benchmarks/results/ray_workers_cpu.json.

    python benchmarks/ray_workers.py [--clips 4] [--minutes 1] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_row(n: int, footage: Path, out: Path) -> dict[str, object]:
    """Runs in the pinned child: one Ray instance of ``n`` CPUs over ``footage``."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:n]))
    from handclust.config import load_config
    from handclust.io.footage import find_clips
    from handclust.io.storage import OutputStore
    from handclust.pipeline import frame_stages
    from handclust.progress import Progress
    from handclust.runtime.ray_runner import RayRunner

    # Half of each worker's CPU goes to the stage actors (one pool per stage, n actors each), the
    # rest to decode tasks: n * stages * (0.5 / stages) + 0.5 <= n for every n >= 1.
    names = [s.name for s in frame_stages(load_config(None, []))]
    pools = "{" + ", ".join(f"{name}: {n}" for name in names) + "}"
    cfg = load_config(None, ["runner=ray", "progress=false", f"ray.num_cpus={n}", "ray.decode_num_cpus=0.5",
                             f"ray.actor_num_cpus={int(50 / len(names)) / 100:.2f}", f"ray.concurrency={pools}"])
    clips = find_clips(footage, cfg.phase.pattern)
    t0 = time.perf_counter()
    statuses = RayRunner(cfg, OutputStore(out), Progress(False)).process_clips(clips)
    wall = time.perf_counter() - t0
    return {"workers": n, "ray_num_cpus": n, "cores_pinned": len(os.sched_getaffinity(0)), "stages": names,
            "clips_ok": sum(s.get("status") == "ok" for s in statuses), "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ray_workers_cpu.json")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # child mode: n workers
    ap.add_argument("--footage", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.one:
        print("ROW " + json.dumps(one_row(args.one, args.footage, args.out)))
        return

    from handclust.synthetic.sample import make_sample_footage

    work = Path(tempfile.mkdtemp(prefix="hc-raybench-"))
    w, h = (int(v) for v in args.size.split("x"))
    t0 = time.perf_counter()
    footage = make_sample_footage(work / "footage", n_clips=args.clips, minutes=args.minutes, seed=5, fps=15.0, size=(w, h))
    print(f"rendered {args.clips} clips in {time.perf_counter() - t0:.1f} s")
    footage_s = args.clips * args.minutes * 60
    rows = []
    for n in args.workers:
        if n > len(os.sched_getaffinity(0)):
            print(f"{n} worker(s): skipped, this machine has {len(os.sched_getaffinity(0))} cores")
            continue
        r = subprocess.run([sys.executable, __file__, "--one", str(n), "--footage", str(footage), "--out", str(work / f"out_{n}")],
                           capture_output=True, text=True, check=True)
        row = json.loads(next(ln for ln in r.stdout.splitlines() if ln.startswith("ROW "))[4:])
        row["footage_s_per_wall_s"] = footage_s / row["wall_s"]
        rows.append(row)
        print(f"{n} worker(s) on {row['cores_pinned']} core(s): {row['wall_s']:.1f} s wall, "
              f"{row['footage_s_per_wall_s']:.2f} s of footage per s")
    base = rows[0]["wall_s"]
    for r in rows:
        r["speedup_vs_first"] = base / r["wall_s"]
    result = {"what": "RayRunner.process_clips (decode + frame stages + segments + descriptors), fresh local Ray per row, "
                      "each row in a process pinned to that many cores",
              "footage": f"{args.clips} clips x {args.minutes} min, {args.size} @ 15 fps, sampled at 5 fps",
              "host": platform.node(), "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d"), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
