"""The features-in path (`segment-features`) on features it was not designed on: per-frame
descriptors that HandClust itself measured on rendered footage, not Gaussian prototypes.

`benchmarks/discovery.py` scores `segment-features` on synthetic feature sets drawn from planted
Gaussian prototypes, the same generator the design was tuned on. This script makes a second kind
of set: sample footage v2 (held-out seeds) goes through the frame stages (scene histograms, optical
flow, ego-motion), each frame's descriptors are z-scored and reduced to 64 dimensions by one PCA
over the whole set (as the literature's reduced Fisher-vector features are), and the rendered
ground truth gives each frame its label. The set is then scored like the real one: HandClust with
defaults (K found), TW-FINCH per video with K given, and one segment per video.

These clips are not scripted (each holds a different subset of the work in a random order), so
scores are lower than on the scripted feature sets; what matters is the ranking against the
references on the same set.

Writes ``benchmarks/results/footage_features.json``::

    python benchmarks/footage_features.py [--seeds 20 21 22] [--clips 5] [--minutes 2] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "footage_features.json"
COLUMNS = ("scene_embedding", "flow_grid", "flow_direction_hist", "flow_mag_mean", "flow_mag_p90", "ego_tx", "ego_ty",
           "ego_rotation", "ego_scale", "ego_residual", "ego_ratio")


def frame_matrix(frames: pd.DataFrame) -> np.ndarray:
    parts = []
    for c in COLUMNS:
        v = frames[c].to_numpy()
        parts.append(np.stack(v).astype(np.float64) if v.dtype == object else v.astype(np.float64)[:, None])
    return np.nan_to_num(np.hstack(parts))


def make_set(seed: int, clips: int, minutes: float, dim: int = 64) -> tuple[Path, dict[str, Any]]:
    """Render footage, run the frame stages, write ``features/<clip>.npy`` and ``groundTruth/<clip>.txt``."""
    from handclust import discover
    from handclust.config import load_config
    from handclust.synthetic.sample import make_sample_footage

    footage = make_sample_footage(tempfile.mkdtemp(prefix="hc-ff-foot-"), n_clips=clips, minutes=minutes, seed=seed,
                                  version=2)
    out = Path(tempfile.mkdtemp(prefix="hc-ff-run-"))
    cfg = load_config(None, ["runner=local", "report.enabled=false", "labels.enabled=false", "progress=false",
                             "evaluation.ablations=false", "pose.enabled=false"])
    discover(footage, out=out, config=cfg)
    names = pd.read_parquet(out / "clips.parquet").set_index("clip_id").path.map(lambda p: Path(p).name)
    truth = pd.read_parquet(footage / "ground_truth.parquet")
    sample_fps = cfg.decode.sample_fps
    per_clip = []
    for f in sorted((out / "frames").glob("*.parquet")):
        fr = pd.read_parquet(f).sort_values("frame_idx")
        name = names[fr.clip_id.iloc[0]]
        g = truth[truth.file == name].sort_values("t")
        t = fr.frame_idx.to_numpy() / sample_fps
        k = np.clip(np.searchsorted(g.t.to_numpy(), t, side="right") - 1, 0, len(g) - 1)
        per_clip.append((Path(name).stem, frame_matrix(fr), g.activity.to_numpy()[k]))
    x = np.vstack([m for _, m, _ in per_clip])
    mu, sd = x.mean(0), x.std(0)
    z = (x - mu) / np.where(sd > 1e-9, sd, 1.0)
    _, _, vt = np.linalg.svd(z - z.mean(0), full_matrices=False)
    proj = vt[:dim].T
    d = Path(tempfile.mkdtemp(prefix="hc-ff-set-"))
    (d / "features").mkdir()
    (d / "groundTruth").mkdir()
    for name, m, labels in per_clip:
        zm = (m - mu) / np.where(sd > 1e-9, sd, 1.0)
        np.save(d / "features" / f"{name}.npy", (zm @ proj).astype(np.float32))
        (d / "groundTruth" / f"{name}.txt").write_text("\n".join(map(str, labels)) + "\n")
    return d, {"frames": int(len(x)), "raw_dims": int(x.shape[1]), "dims": dim, "fps": sample_fps}


def cached_set(cache: Path | None, seed: int, clips: int, minutes: float) -> tuple[Path, dict[str, Any]]:
    """:func:`make_set`, or the copy kept under ``cache`` by an earlier call with the same arguments."""
    if cache is None:
        return make_set(seed, clips, minutes)
    d = cache / f"set{seed}-{clips}x{minutes:g}"
    if (d / "info.json").is_file():
        return d, json.loads((d / "info.json").read_text())
    import shutil

    made, info = make_set(seed, clips, minutes)
    shutil.rmtree(d, ignore_errors=True)
    shutil.copytree(made, d)
    (d / "info.json").write_text(json.dumps(info))  # written last: its presence marks a complete copy
    return d, info


def score(d: Path, fps: float) -> list[dict[str, Any]]:
    from handclust.config import load_config
    from handclust.core.metrics import segmentation_scores
    from handclust.segment_features import FEATURE_DEFAULTS, load_feature_dir, segment_features

    sys.path.insert(0, str(ROOT))
    from twfinch import tw_finch

    videos = load_feature_dir(d)
    truth = np.concatenate([np.asarray(v.truth, dtype=object) for v in videos])
    vid = np.concatenate([np.full(len(v.features), v.name, dtype=object) for v in videos])
    per_video = int(round(np.mean([len(set(v.truth)) for v in videos])))
    n_true = len(set(truth))
    rows = []
    t0 = time.perf_counter()
    ev = segment_features(d, tempfile.mkdtemp(prefix="hc-ff-out-"), fps, load_config(None, list(FEATURE_DEFAULTS)))
    rows.append({"method": "HandClust, defaults (K found)", "k": ev["k"], **_flat(ev["ground_truth"]),
                 "seconds": round(time.perf_counter() - t0, 1)})
    for name, k, pred in (
        ("TW-FINCH per video, K given", per_video, np.concatenate([tw_finch(v.features, per_video) for v in videos])),
        ("one segment per video", 1, np.concatenate([np.zeros(len(v.features), np.int64) for v in videos])),
    ):
        rows.append({"method": name, "k": k, **_flat(segmentation_scores(truth, pred, vid))})
    for r in rows:
        r["k_true"] = n_true
        r["k_true_per_video"] = per_video
    return rows


def _flat(gt: dict[str, Any]) -> dict[str, Any]:
    return {"per_video": {m: round(gt["per_video"][m], 4) for m in ("mof", "f1@50", "edit")},
            "whole_set": {m: round(gt["whole_set"][m], 4) for m in ("mof", "f1@50", "edit")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[20, 21, 22])
    ap.add_argument("--clips", type=int, default=5)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--cache", type=Path, help="keep each rendered set under CACHE/set<seed>-<clips>x<minutes> and reuse "
                    "it on the next call (rendering and the frame stages take minutes per seed)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    rows = []
    for seed in args.seeds:
        d, info = cached_set(args.cache, seed, args.clips, args.minutes)
        for r in score(d, info["fps"]):
            rows.append({"seed": seed, **info, **r})
            print(f"seed {seed} {r['method']:32s} k={r['k']}/{r['k_true']} per-video MoF {r['per_video']['mof']:.3f} "
                  f"F1@50 {r['per_video']['f1@50']:.3f} Edit {r['per_video']['edit']:.3f} "
                  f"whole-set MoF {r['whole_set']['mof']:.3f}", flush=True)
    summary: dict[str, Any] = {}
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = [r for r in rows if r["method"] == method]
        summary[method] = {f"{part}.{m}": round(float(np.mean([r[part][m] for r in rs])), 4)
                           for part in ("per_video", "whole_set") for m in ("mof", "f1@50", "edit")}
        summary[method]["k"] = round(float(np.mean([r["k"] for r in rs])), 2)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"what": __doc__.split("\n\n")[0], "seeds": args.seeds, "clips": args.clips,
                                   "minutes": args.minutes, "summary": summary, "rows": rows}, indent=1, default=str))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
