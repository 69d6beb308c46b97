"""Pipeline throughput with 1 vs 2 Ray workers on this machine.

Renders N synthetic clips (default 4 x 1 min, 640x360 @ 15 fps), then for each worker count
runs the per-clip stages through the Ray runner on a fresh local instance sized to that many
CPUs (decode tasks and stage actors scale with it) and reports seconds of footage per second
of wall time, and the speed-up. Includes Ray's start-up, as a user's run does.
Writes benchmarks/results/ray_workers_<host>.json.

    python benchmarks/ray_workers.py [--clips 4] [--minutes 1] [--workers 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--minutes", type=float, default=1.0)
    ap.add_argument("--size", default="640x360")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "ray_workers_cpu.json")
    args = ap.parse_args()

    from handclust.config import load_config
    from handclust.footage import find_clips
    from handclust.progress import Progress
    from handclust.ray_runner import RayRunner
    from handclust.storage import OutputStore
    from handclust.synthetic import make_sample_footage

    work = Path(tempfile.mkdtemp(prefix="hc-raybench-"))
    w, h = (int(v) for v in args.size.split("x"))
    t0 = time.perf_counter()
    footage = make_sample_footage(work / "footage", n_clips=args.clips, minutes=args.minutes, seed=5, fps=15.0, size=(w, h))
    print(f"rendered {args.clips} clips in {time.perf_counter() - t0:.1f} s")
    footage_s = args.clips * args.minutes * 60
    rows = []
    for n in args.workers:
        cfg = load_config(None, ["runner=ray", "progress=false", f"ray.num_cpus={n}", "ray.decode_num_cpus=0.5",
                                 f"ray.actor_num_cpus={0.5 / 2:.2f}", f"ray.concurrency={{scene: {n}, motion: {n}}}"])
        clips = find_clips(footage, cfg.phase.pattern)
        out = work / f"out_{n}"
        t0 = time.perf_counter()
        statuses = RayRunner(cfg, OutputStore(out), Progress(False)).process_clips(clips)
        wall = time.perf_counter() - t0
        ok = sum(s.get("status") == "ok" for s in statuses)
        rows.append({"workers": n, "ray_num_cpus": n, "clips_ok": ok, "wall_s": wall,
                     "footage_s_per_wall_s": footage_s / wall})
        print(f"{n} worker(s): {wall:.1f} s wall, {footage_s / wall:.2f} s of footage per s")
    base = rows[0]["wall_s"]
    for r in rows:
        r["speedup_vs_first"] = base / r["wall_s"]
    result = {"what": "RayRunner.process_clips (decode + motion + scene + segments + descriptors), fresh local Ray per row",
              "footage": f"{args.clips} clips x {args.minutes} min, {args.size} @ 15 fps, sampled at 5 fps",
              "host": platform.node(), "cpus": os.cpu_count(), "when": time.strftime("%Y-%m-%d"), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
