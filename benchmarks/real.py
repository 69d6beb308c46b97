"""The discovery core on real data (../shared/DATA.md): real label sequences, real model scores, real segments.

Every figure in ``benchmarks/results/real.json`` says what is real in it:

- **sequences** (``kind: "real label sequences, rendered features"``): Breakfast (9 tasks, coffee
  left out), 50Salads and the drilling rig. The order of actions, their bout lengths, the
  background and the differences between people are real; the per-frame features are rendered
  along them (one prototype per action, a per-person style, a per-person version of each action,
  drift within a bout, AR(1) frame noise: :func:`render`). Sets of 5 videos of one task (one camera
  per person), as the held-back scripted set is.
- **sequences_slow**: the same Breakfast sequences (one set per task) with half the frame noise
  wandering slowly (:data:`SLOW`), as the residuals of the real model scores below do: a person's
  stretch of one action drifts into a look of its own.
- **scores** (``kind: "real model scores"``): ASOT's two example videos, a trained model's per-frame
  action scores with per-frame truth, clustered as they are.
- **ikea** (``kind: "real segments, real model probabilities"``): IKEA ASM test videos, one row per
  true segment with a model's averaged 33-class probabilities; the segments are clustered jointly
  (HandClust's clustering core with K found) and scored per frame.
- **ikea_fusion**: the same segments described by four models on four inputs (RGB, depth, frames,
  pose) as four modalities: late fusion on real data, each alone against fused.
- **ikea_frames**: the same IKEA segments as a user would give them to ``segment-features`` (each
  segment's probabilities repeated per frame at 5 fps), scored per frame against k-means at the K
  HandClust found on the same frames.
- **three_tasks**: three Breakfast tasks, a place each, as filmed (three people per task) and one
  recording per task cut in three: the videos must part into three groups. Real sequences, rendered features.
- **sparse**: a frame every 2 s (0.5 fps), as the real helmet footage of the issue was sampled: one
  set per Breakfast task, 50Salads, the drilling rig and six clips of two tasks, rendered plain and
  weak (k-means on 8 s window means near the AMI it scored on the real footage), against k-means at
  the K found on frames and on 8 s window means (the issue's reference). Real sequences, rendered features.
- **two_levels**: two Breakfast tasks, each with its own place offset, their videos joined into one
  long clip per task (minutes of varied work per clip, as on helmet footage) and as filmed: a clip
  must not become one activity, and the activities must still tell the tasks apart. Real
  sequences, rendered features.

Each set is scored for HandClust with defaults (K found), next to k-means at the K HandClust found
on the same features (the floor the issue sets), HandClust with K given, and TW-FINCH per video
with K given. Tasks are split: ``dev`` tasks were looked at while choosing defaults, ``held_out``
tasks and sets were not.

    HANDCLUST_DATA=/path/to/realdata python benchmarks/real.py [--quick] [--sets sequences scores ikea]

``HANDCLUST_DATA`` holds the fetched folders (see DATA.md): ``breakfast/pytorch/groundTruth``,
``salads/Frame_Labels``, ``drilling/data/drilling/groundTruth``, ``asot/examples/data``, ``ikea/*.csv``.
Without it the script says so in one line and exits 0 (CI has no fetched data).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results" / "real.json"
sys.path.insert(0, str(ROOT))

# Tasks looked at while choosing defaults; the rest are held out.
DEV_TASKS = ("cereals", "friedegg", "juice", "milk")
HELD_OUT_TASKS = ("pancake", "salat", "sandwich", "scrambledegg", "tea")
VIDEOS_PER_SET = 5
FPS = {"breakfast": 15.0, "salads": 30.0, "drilling": 15.0, "asot": 15.0, "ikea": 25.0}


# --------------------------------------------------------------------------- loading real labels


def breakfast_sets(root: Path, tasks: tuple[str, ...], per_set: int = VIDEOS_PER_SET, max_sets: int = 2,
                   ) -> dict[str, list[tuple[str, list[str]]]]:
    """``{"breakfast/<task>/<i>": [(video, labels at 15 fps), ...]}``: one camera per person, people in
    file order, cut into sets of ``per_set`` videos. Coffee is never read (reserved, DATA.md)."""
    gt = root / "breakfast" / "pytorch" / "groundTruth"
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for task in tasks:
        if task == "coffee":
            continue
        seen: dict[str, Path] = {}
        for p in sorted(gt.glob(f"*_{task}.txt")):
            person = p.name.split("_")[0]
            seen.setdefault(person, p)  # first camera of each person
        vids = [(p.stem, [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]) for p in seen.values()]
        for i in range(min(max_sets, len(vids) // per_set)):
            out[f"breakfast/{task}/{i}"] = vids[i * per_set:(i + 1) * per_set]
    return out


def salads_sets(root: Path, per_set: int = VIDEOS_PER_SET, max_sets: int = 2, step: int = 2) -> dict[str, list[tuple[str, list[str]]]]:
    """50Salads at 30 fps, every ``step``-th frame kept (15 fps): ``start,end,label,idx`` rows to per-frame labels."""
    d = root / "salads" / "Frame_Labels"
    vids = []
    for p in sorted(d.glob("*.txt")):
        labels: list[str] = []
        for ln in p.read_text().splitlines():
            parts = ln.strip().split(",")
            if len(parts) < 3 or not parts[0].isdigit():
                continue
            a, b, lab = int(parts[0]), int(parts[1]), parts[2]
            labels += [lab] * (b - a + 1)
        vids.append((p.stem, labels[::step]))
    return {f"salads/{i}": vids[i * per_set:(i + 1) * per_set] for i in range(min(max_sets, len(vids) // per_set))}


def drilling_set(root: Path, step: int = 2) -> dict[str, list[tuple[str, list[str]]]]:
    """The drilling rig's four recordings (01_5 and 01_6 are time-reversed copies: left out)."""
    d = root / "drilling" / "data" / "drilling" / "groundTruth"
    vids = []
    for p in sorted(d.glob("*.txt")):
        if re.match(r"01_[56]_", p.name):
            continue
        vids.append((p.stem, [ln.strip() for ln in p.read_text().splitlines() if ln.strip()][::step]))
    return {"drilling": vids}


# --------------------------------------------------------------------------- rendering features


def render(videos: list[tuple[str, list[str]]], dim: int = 64, seed: int = 0, style_sd: float = 1.0, person_sd: float = 0.8,
           drift_sd: float = 0.5, noise_sd: float = 3.0, rho: float = 0.9, site_sd: float = 0.0,
           slow_share: float = 0.0, slow_rho: float = 0.995) -> list[np.ndarray]:
    """Per-frame features ``(n_frames, dim)`` along real label sequences.

    One unit-scale prototype per action shared by all videos; a per-video style (camera, person,
    light: the clip fingerprint); a per-video version of each action; a linear drift within each bout
    (an action changes how it looks as it progresses); AR(1) frame noise with correlation ``rho``.
    The structure (order, bout lengths, background) is real; these feature statistics are ours.
    ``site_sd`` > 0 adds one offset shared by all these videos (where the task was filmed: the
    coarse level when several tasks are rendered into one corpus).
    """
    rng = np.random.default_rng(seed)
    site = rng.normal(0, site_sd, dim) if site_sd > 0 else np.zeros(dim)
    actions = sorted({lab for _, labs in videos for lab in labs})
    proto = {a: rng.normal(0, 1, dim) for a in actions}
    drift_dir = {a: rng.normal(0, drift_sd, dim) for a in actions}
    out = []
    for _, labs in videos:
        n = len(labs)
        style = rng.normal(0, style_sd, dim)
        version = {a: rng.normal(0, person_sd, dim) for a in actions}
        lab = np.asarray(labs, dtype=object)
        x = np.stack([proto[a] + version[a] for a in labs]) + style + site
        # drift: position within each bout in [-0.5, 0.5]
        change = np.r_[True, lab[1:] != lab[:-1]]
        starts = np.flatnonzero(change)
        ends = np.r_[starts[1:], n]
        for a, b in zip(starts, ends):
            pos = (np.arange(b - a) + 0.5) / max(b - a, 1) - 0.5
            x[a:b] += pos[:, None] * drift_dir[lab[a]]
        e = rng.normal(0, noise_sd * np.sqrt((1 - slow_share) * (1 - rho ** 2)), (n, dim))
        for t in range(1, n):
            e[t] += rho * e[t - 1]
        if slow_share > 0:
            s = rng.normal(0, noise_sd * np.sqrt(slow_share * (1 - slow_rho ** 2)), (n, dim))
            s[0] = rng.normal(0, noise_sd * np.sqrt(slow_share), dim)
            for t in range(1, n):
                s[t] += slow_rho * s[t - 1]
            e += s
        out.append((x + e).astype(np.float32))
    return out


# --------------------------------------------------------------------------- methods


def write_feature_dir(root: Path, names: list[str], feats: list[np.ndarray], truths: list[list[str]],
                      tasks: list[str] | None = None) -> Path:
    """A segment-features folder: features/<name>.npy, or features/<task>/<name>.npy where ``tasks``
    files each video under its task, and groundTruth/<name>.txt."""
    (root / "groundTruth").mkdir(parents=True, exist_ok=True)
    for i, (name, x, t) in enumerate(zip(names, feats, truths)):
        folder = root / "features" / (tasks[i] if tasks else "")
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / f"{name}.npy", x)
        (root / "groundTruth" / f"{name}.txt").write_text("\n".join(t) + "\n")
    return root


def scores(truths: list[list[str]], preds: list[np.ndarray], names: list[str]) -> dict[str, Any]:
    from handclust.core.metrics import segmentation_scores

    t = np.concatenate([np.asarray(x, dtype=object) for x in truths])
    p = np.concatenate(preds)
    v = np.concatenate([np.full(len(x), n, dtype=object) for x, n in zip(truths, names)])
    s = segmentation_scores(t, p, v)
    segs = float(np.mean([1 + int((np.diff(q) != 0).sum()) for q in preds]))
    true_segs = float(np.mean([1 + sum(a != b for a, b in zip(x[:-1], x[1:])) for x in truths]))
    return {"mof": round(s["per_video"]["mof"], 4), "f1@50": round(s["per_video"]["f1@50"], 4),
            "edit": round(s["per_video"]["edit"], 4), "whole_set_mof": round(s["whole_set"]["mof"], 4),
            "nmi": round(float(s["nmi"]), 4), "ari": round(float(s["ari"]), 4),
            "k": int(len(np.unique(p))), "segments_per_video": round(segs, 2), "true_segments_per_video": round(true_segs, 2)}


def run_handclust(names: list[str], feats: list[np.ndarray], truths: list[list[str]], fps: float,
                  n_clusters: int | None = None, overrides: tuple[str, ...] = (), time_weight: float | None = None,
                  split_groups: bool = True, tasks: list[str] | None = None) -> tuple[list[np.ndarray], dict[str, Any]]:
    """``segment-features`` as a user runs it (defaults unless ``overrides``): per-frame ids and its eval.json;
    ``tasks``: each video filed under features/<task>/."""
    from handclust.config import load_config
    from handclust.segment_features import FEATURE_DEFAULTS, segment_features

    with tempfile.TemporaryDirectory(prefix="hc-real-") as tmp:
        root = write_feature_dir(Path(tmp) / "set", names, feats, truths, tasks)
        cfg = load_config(None, list(FEATURE_DEFAULTS) + list(overrides))
        kw: dict[str, Any] = {} if time_weight is None else {"time_weight": time_weight}
        ev = segment_features(root, Path(tmp) / "out", fps, config=cfg, n_clusters=n_clusters, split_groups=split_groups, **kw)
        preds = [np.asarray([int(v) for v in (Path(tmp) / "out" / f"{n}.txt").read_text().split()]) for n in names]
    return preds, ev


def run_kmeans(feats: list[np.ndarray], k: int, seed: int = 0) -> list[np.ndarray]:
    """Plain k-means on every frame of every video together (no time, no segments): the floor."""
    from sklearn.cluster import KMeans

    x = np.vstack(feats).astype(np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    lab = KMeans(n_clusters=max(k, 1), n_init=4, random_state=seed).fit_predict(x)
    out, i = [], 0
    for f in feats:
        out.append(lab[i:i + len(f)])
        i += len(f)
    return out


def run_twfinch(feats: list[np.ndarray], truths: list[list[str]]) -> list[np.ndarray]:
    """TW-FINCH per video with that video's true K (benchmarks/twfinch.py), on every 3rd frame (memory: n^2)."""
    from twfinch import tw_finch

    out = []
    for x, t in zip(feats, truths):
        k = len(set(t))
        sub = x[::3]
        lab = tw_finch(sub, min(k, len(sub)))
        out.append(np.repeat(lab, 3)[: len(x)])
    return out


def evaluate_set(name: str, names: list[str], feats: list[np.ndarray], truths: list[list[str]], fps: float,
                 variants: dict[str, dict[str, Any]], twfinch: bool = True) -> dict[str, Any]:
    true_k = len({lab for t in truths for lab in t})
    res: dict[str, Any] = {"videos": len(names), "frames": int(sum(len(t) for t in truths)), "true_k": true_k, "fps": fps}
    t0 = time.perf_counter()
    preds, ev = run_handclust(names, feats, truths, fps)
    res["handclust"] = {**scores(truths, preds, names), "k_found": int(ev["k"]), "noise_rate": round(float(ev["noise_rate"]), 3),
                        "seconds": round(time.perf_counter() - t0, 1)}
    k_found = int(ev["k"]) or 1
    res["kmeans_at_k_found"] = scores(truths, run_kmeans(feats, k_found), names)
    for vname, kw in variants.items():
        p, e = run_handclust(names, feats, truths, fps, **kw)
        res[vname] = {**scores(truths, p, names), "k_found": int(e["k"])}
    if twfinch:
        res["twfinch_k_given_per_video"] = scores(truths, run_twfinch(feats, truths), names)
    h, km = res["handclust"], res["kmeans_at_k_found"]
    logging.getLogger("real").warning("%s: handclust MoF %.3f F1@50 %.3f whole %.3f k=%d | kmeans MoF %.3f whole %.3f%s",
                                      name, h["mof"], h["f1@50"], h["whole_set_mof"], h["k_found"], km["mof"], km["whole_set_mof"],
                                      (f" | twfinch MoF {res['twfinch_k_given_per_video']['mof']:.3f} "
                                       f"F1@50 {res['twfinch_k_given_per_video']['f1@50']:.3f}") if twfinch else "")
    return res


SEQUENCE_VARIANTS: dict[str, dict[str, Any]] = {
    "handclust_k_given": {},  # filled per set with the true K
}


# The slow variant of the rendering (sequences_slow): half the frame noise's variance wanders slowly
# (AR(1) with rho 0.995 per frame). The real model scores of DATA.md (the salad video) keep a
# correlation of 0.44 between a frame's residual from its action's mean and the residual 1 s later;
# the plain rendering keeps 0.13-0.20, this one 0.33-0.52. Slow wander within a video is what makes
# a person's stretch of one action look like its own activity (clusters found per video).
SLOW = {"slow_share": 0.5, "noise_sd": 3.5}
# The option for activities shared across videos (cluster.max_private_share, off by default), scored
# beside the defaults where it acts: on the slow variant most clusters are one video's own.
SHARED_VARIANT = {"handclust_max_private_share_0.5": {"overrides": ("cluster.max_private_share=0.5",)}}


def sequences_part(data: Path, quick: bool, variants: dict[str, dict[str, Any]],
                   render_kw: dict[str, Any] | None = None) -> dict[str, Any]:
    if render_kw is None:
        groups = {"dev": breakfast_sets(data, DEV_TASKS, max_sets=1 if quick else 2),
                  "held_out": {**breakfast_sets(data, HELD_OUT_TASKS, max_sets=1),
                               **({} if quick else {**salads_sets(data, max_sets=2), **drilling_set(data)})}}
    else:  # the variants: one set per Breakfast task
        groups = {"dev": breakfast_sets(data, DEV_TASKS, max_sets=1), "held_out": breakfast_sets(data, HELD_OUT_TASKS, max_sets=1)}
    out: dict[str, Any] = {"kind": "real label sequences, rendered features (render(): prototypes, person style and version, "
                                   "drift, AR(1) noise" + (f"; {render_kw}" if render_kw else "") + ")",
                           "dev_tasks": list(DEV_TASKS), "sets": {}}
    for split, sets in groups.items():
        for si, (sname, vids) in enumerate(sets.items()):
            names = [re.sub(r"[^A-Za-z0-9_-]", "_", v) for v, _ in vids]
            truths = [labs for _, labs in vids]
            feats = render(vids, seed=si, **(render_kw or {}))
            fps = FPS[sname.split("/")[0]]
            true_k = len({lab for t in truths for lab in t})
            var = {"handclust_k_given": {"n_clusters": true_k}, **variants}
            out["sets"][sname] = {"split": split, **evaluate_set(sname, names, feats, truths, fps, var)}
    out["summary"] = summarise(out["sets"])
    return out


# Pairs of Breakfast tasks for the two-level part: dev pairs from the dev tasks, held-out pairs from the rest.
TWO_LEVEL_PAIRS = {"dev": [("cereals", "friedegg"), ("juice", "milk")],
                   "held_out": [("pancake", "sandwich"), ("salat", "tea"), ("scrambledegg", "pancake")]}


def cut_in_three(names: list[str], feats: list[np.ndarray], labels: list[list[str]], tasks: list[str],
                 ) -> tuple[list[str], list[np.ndarray], list[list[str]], list[str]]:
    """Each recording (name, features, labels, task) cut into three consecutive clips ``<name>_part<j>``."""
    cut: tuple[list[str], list[np.ndarray], list[list[str]], list[str]] = ([], [], [], [])
    for name, f, labs, task in zip(names, feats, labels, tasks):
        edges = np.linspace(0, len(labs), 4).astype(int)
        for j in range(3):
            cut[0].append(f"{name}_part{j}")
            cut[1].append(f[edges[j]:edges[j + 1]])
            cut[2].append(labs[edges[j]:edges[j + 1]])
            cut[3].append(task)
    return cut


def one_clip_per_task(feats: list[np.ndarray], truths: list[list[str]], task_of: list[str], tasks: tuple[str, ...] | list[str],
                      suffix: str = "_long") -> tuple[list[str], list[np.ndarray], list[list[str]], list[str]]:
    """Each task's videos joined in order into one long clip ``<task><suffix>`` (one wearer and one
    place for minutes of varied work): names, features, labels and the task of each clip."""
    return ([f"{t}{suffix}" for t in tasks], [np.vstack([f for f, u in zip(feats, task_of) if u == t]) for t in tasks],
            [[lab for tr, u in zip(truths, task_of) if u == t for lab in tr] for t in tasks], list(tasks))


def tasks_in_places(data: Path, tasks: tuple[str, ...], per_task: int, site_sd: float, site_seed: int, dim: int = 64,
                    ) -> tuple[list[tuple[str, list[str]]], list[str], dict[str, np.ndarray]]:
    """Breakfast videos of several tasks, each task filmed in its own place: the videos (``per_task``
    people per task, a task with too few left out), the task of each, and each task's place offset
    (``site_sd``, drawn from ``site_seed`` in task order) to add to its rendered features."""
    vids: list[tuple[str, list[str]]] = []
    task_of: list[str] = []
    for task in tasks:
        sets = breakfast_sets(data, (task,), per_set=per_task, max_sets=1)
        if not sets:
            continue
        got = next(iter(sets.values()))
        vids += got
        task_of += [task] * len(got)
    rng = np.random.default_rng(site_seed)
    site = {t: rng.normal(0, site_sd, dim).astype(np.float32) for t in tasks}
    return vids, task_of, site


def two_levels_part(data: Path, quick: bool, per_task: int = 4, site_sd: float = 2.0) -> dict[str, Any]:
    """What separates clips and what recurs inside them, on real label sequences: two Breakfast tasks,
    each filmed in its own place (a shared offset per task, ``site_sd``), their videos joined into one
    long clip per task with one look throughout (the helmet-camera case: minutes of varied work per
    clip, one clip per trade), and the same videos as separate clips, each with its own style. A clip must not become one activity: activities per clip
    against the truth, per-clip MoF / F1@50, and whether the activities still tell the tasks apart
    (NMI of activity and task), with defaults and with the fine level off."""
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    out: dict[str, Any] = {"kind": "real label sequences (two Breakfast tasks), rendered features, joined into one long clip "
                                   "per task (also cut in three) and as filmed", "per_task": per_task, "site_sd": site_sd, "sets": {}}
    pairs = {k: v[:1] for k, v in TWO_LEVEL_PAIRS.items()} if quick else TWO_LEVEL_PAIRS
    for split, plist in pairs.items():
        for pi, (ta, tb) in enumerate(plist):
            vids, task_of, site = tasks_in_places(data, (ta, tb), per_task, site_sd, 200 + pi)
            if len(set(task_of)) < 2:
                continue
            feats = render(vids, seed=100 + pi)
            # The long clips are one wearer and one place each: no per-video style inside them (a
            # style that changed every few minutes would be four people, not one working session).
            steady = render(vids, seed=100 + pi, style_sd=0.0)
            feats = [f + site[t] for f, t in zip(feats, task_of)]
            steady = [f + site[t] for f, t in zip(steady, task_of)]
            truths = [labs for _, labs in vids]
            layouts = {
                "one long clip per task": one_clip_per_task(steady, truths, task_of, (ta, tb)),
                "clips as filmed": ([re.sub(r"[^A-Za-z0-9_-]", "_", v) for v, _ in vids], feats, truths, task_of),
            }
            # Each task's long clip cut in three (six clips, as the held-back helmet set was cut):
            # clips of one recording share its place and look, so they come as two groups of three.
            layouts["one long clip per task cut in three"] = cut_in_three(*layouts["one long clip per task"])
            res: dict[str, Any] = {"split": split, "tasks": [ta, tb], "videos": len(vids)}
            for lname, (names, fx, tx, tasks) in layouts.items():
                true_acts = float(np.mean([len(set(t)) for t in tx]))
                for vname, over, kw in (("handclust", (), {}), ("handclust, fine level off", ("cluster.fine=false",), {}),
                                        ("handclust, videos not parted", (), {"split_groups": False})):
                    if kw and lname == "one long clip per task":  # 2 clips: never parted
                        continue
                    preds, ev = run_handclust(names, fx, tx, FPS["breakfast"], overrides=over, **kw)
                    sc = scores(tx, preds, names)
                    task_frames = np.concatenate([np.full(len(p), t, dtype=object) for p, t in zip(preds, tasks)])
                    truth_frames = np.concatenate([np.asarray(t, dtype=object) for t in tx])
                    sc.update({"k_found": int(ev["k"]), "activities_per_clip": round(float(np.mean([len(np.unique(p)) for p in preds])), 2),
                               "ami_frames": round(float(adjusted_mutual_info_score(truth_frames, np.concatenate(preds))), 4),
                               "groups": len(ev.get("video_groups", [])),
                               "true_activities_per_clip": round(true_acts, 2),
                               "task_nmi": round(float(normalized_mutual_info_score(task_frames, np.concatenate(preds))), 4)})
                    res[f"{lname}: {vname}"] = sc
                    logging.getLogger("real").warning("two levels %s/%s %s %s: MoF %.3f F1@50 %.3f acts/clip %.1f (true %.1f) task NMI %.2f",
                                                      ta, tb, lname, vname, sc["mof"], sc["f1@50"], sc["activities_per_clip"],
                                                      true_acts, sc["task_nmi"])
            out["sets"][f"{ta}+{tb}"] = res
    keys = sorted({k for r in out["sets"].values() for k in r if ":" in k})
    out["summary"] = {split: {k: {m: round(float(np.mean([r[k][m] for r in out["sets"].values() if r["split"] == split])), 4)
                                  for m in ("mof", "f1@50", "edit", "whole_set_mof", "activities_per_clip",
                                            "true_activities_per_clip", "task_nmi", "ami_frames", "k_found", "groups")}
                              for k in keys}
                      for split in ("dev", "held_out") if any(r["split"] == split for r in out["sets"].values())}
    return out


THREE_TASKS = {"dev": [("cereals", "friedegg", "juice"), ("juice", "milk", "cereals")],
               "held_out": [("pancake", "salat", "sandwich"), ("scrambledegg", "tea", "pancake")]}


def three_tasks_part(data: Path, quick: bool, per_task: int = 3, site_sd: float = 2.0) -> dict[str, Any]:
    """Groups beyond two: three Breakfast tasks, each in its own place (a shared offset per task),
    three people per task as filmed (nine clips, each with its own style) and one steady recording
    per task cut in three. The clips must part into the three places (a first cut of one place
    against two leaves two places on one side, so one cut in two is not enough), and each place's
    activities be found as in a single-task set. Real sequences, rendered features."""
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    out: dict[str, Any] = {"kind": "real label sequences (three Breakfast tasks, a place each), rendered features, as filmed "
                                   "and one recording per task cut in three", "per_task": per_task, "site_sd": site_sd, "sets": {}}
    triples = {k: v[:1] for k, v in THREE_TASKS.items()} if quick else THREE_TASKS
    for split, tlist in triples.items():
        for pi, tasks in enumerate(tlist):
            vids, task_of, site = tasks_in_places(data, tuple(tasks), per_task, site_sd, 400 + pi)
            feats = render(vids, seed=300 + pi)
            steady = render(vids, seed=300 + pi, style_sd=0.0)
            feats = [f + site[t] for f, t in zip(feats, task_of)]
            steady = [f + site[t] for f, t in zip(steady, task_of)]
            truths = [labs for _, labs in vids]
            cut = cut_in_three(*one_clip_per_task(steady, truths, task_of, tasks, suffix=""))
            layouts = {"clips as filmed": ([re.sub(r"[^A-Za-z0-9_-]", "_", v) for v, _ in vids], feats, truths, task_of),
                       "one recording per task cut in three": cut}
            res: dict[str, Any] = {"split": split, "tasks": list(tasks), "videos": len(vids)}
            for lname, (names, fx, tx, tk) in layouts.items():
                for vname, kw in (("handclust", {}), ("handclust, videos not parted", {"split_groups": False})):
                    preds, ev = run_handclust(names, fx, tx, FPS["breakfast"], **kw)
                    sc = scores(tx, preds, names)
                    task_frames = np.concatenate([np.full(len(p), t, dtype=object) for p, t in zip(preds, tk)])
                    truth_frames = np.concatenate([np.asarray(t, dtype=object) for t in tx])
                    sc.update({"k_found": int(ev["k"]), "groups": len(ev.get("video_groups", [])),
                               "ami_frames": round(float(adjusted_mutual_info_score(truth_frames, np.concatenate(preds))), 4),
                               "task_nmi": round(float(normalized_mutual_info_score(task_frames, np.concatenate(preds))), 4)})
                    res[f"{lname}: {vname}"] = sc
                    logging.getLogger("real").warning("three tasks %s %s %s: groups %d MoF %.3f F1@50 %.3f AMI %.3f task NMI %.2f",
                                                      "+".join(tasks), lname, vname, sc["groups"], sc["mof"], sc["f1@50"],
                                                      sc["ami_frames"], sc["task_nmi"])
            out["sets"]["+".join(tasks)] = res
    keys = sorted({k for r in out["sets"].values() for k in r if ":" in k})
    out["summary"] = {split: {k: {m: round(float(np.mean([r[k][m] for r in out["sets"].values() if r["split"] == split])), 4)
                                  for m in ("mof", "f1@50", "edit", "whole_set_mof", "task_nmi", "ami_frames", "k_found", "groups")}
                              for k in keys}
                      for split in ("dev", "held_out") if any(r["split"] == split for r in out["sets"].values())}
    return out


def filed_part(data: Path, quick: bool, per_task: int = 4, site_sds: tuple[float, ...] = (0.5, 1.0)) -> dict[str, Any]:
    """Videos filed in a folder per task (features/<task>/, cluster.split_groups_folders): two
    Breakfast tasks per set, four people each as filmed, in places that differ less than two_levels'
    (``site_sds``: the tasks 1.10-1.46 apart), as one flat folder and
    filed by task. Within-task AMI: how well each task's own actions are found, whatever the
    activities do across tasks. Real sequences, rendered features."""
    from scipy.spatial.distance import pdist
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    out: dict[str, Any] = {"kind": "real label sequences (two Breakfast tasks, a place each, closer than two_levels'), "
                                   "rendered features, as filmed, flat and filed by task", "per_task": per_task, "sets": {}}
    pairs = {k: v[:1] for k, v in TWO_LEVEL_PAIRS.items()} if quick else TWO_LEVEL_PAIRS
    for site_sd in site_sds:
        for split, plist in pairs.items():
            for pi, (ta, tb) in enumerate(plist):
                vids, task_of, site = tasks_in_places(data, (ta, tb), per_task, site_sd, 200 + pi)
                feats = [f + site[t] for f, t in zip(render(vids, seed=100 + pi), task_of)]
                truths = [labs for _, labs in vids]
                names = [re.sub(r"[^A-Za-z0-9_-]", "_", v) for v, _ in vids]
                # The tasks' ratio on the videos' mean features (scaled), as the folder test measures it on segments.
                sd = np.vstack(feats).std(axis=0) + 1e-9
                d = pdist(np.vstack([f.mean(0) / sd for f in feats]))
                i, j = np.triu_indices(len(feats), k=1)
                same = np.asarray(task_of)[i] == np.asarray(task_of)[j]
                ratio = float(d[~same].mean() / d[same].mean())
                res: dict[str, Any] = {"split": split, "tasks": [ta, tb], "site_sd": site_sd, "videos": len(vids),
                                       "folder_ratio": round(ratio, 3)}
                truth_frames = np.concatenate([np.asarray(t, dtype=object) for t in truths])
                task_frames = np.concatenate([np.full(len(t), u, dtype=object) for t, u in zip(truths, task_of)])
                for vname, kw in (("handclust, one folder", {}), ("handclust, filed by task", {"tasks": task_of})):
                    preds, ev = run_handclust(names, feats, truths, FPS["breakfast"], **kw)
                    sc = scores(truths, preds, names)
                    p = np.concatenate(preds)
                    sc.update({"k_found": int(ev["k"]), "groups": len(ev.get("video_groups", [])),
                               "ami_frames": round(float(adjusted_mutual_info_score(truth_frames, p)), 4),
                               "ami_within_task": round(float(np.mean([adjusted_mutual_info_score(truth_frames[task_frames == t], p[task_frames == t])
                                                                       for t in (ta, tb)])), 4),
                               "task_nmi": round(float(normalized_mutual_info_score(task_frames, p)), 4)})
                    res[vname] = sc
                    logging.getLogger("real").warning("filed %s+%s sd %.1f %s: groups %d MoF %.3f F1@50 %.3f within-task AMI %.3f task NMI %.2f",
                                                      ta, tb, site_sd, vname, sc["groups"], sc["mof"], sc["f1@50"], sc["ami_within_task"], sc["task_nmi"])
                out["sets"][f"{ta}+{tb}/site_sd={site_sd:g}"] = res
    metrics = ("mof", "f1@50", "edit", "whole_set_mof", "ami_frames", "ami_within_task", "task_nmi", "k_found", "groups")
    out["summary"] = {f"{split}, site_sd={sd:g}": {v: {m: round(float(np.mean([r[v][m] for r in rows])), 4) for m in metrics}
                                                   for v in ("handclust, one folder", "handclust, filed by task")}
                      for split in ("dev", "held_out") for sd in site_sds
                      if (rows := [r for r in out["sets"].values() if r["split"] == split and r["site_sd"] == sd])}
    return out


# The sparse part: a helmet camera's sampling (a frame every 2 s) on real label sequences. "weak" is
# calibrated on the real helmet footage, where k-means on 8 s window means of EfficientNet
# frame features scored AMI 0.17-0.19 against the written windows: frame noise sd 6 puts k-means on
# 8 s windows at 0.10-0.26 on these sets.
SPARSE_STEP = 30  # labels and features at 15 fps: every 30th frame, a frame every 2 s
SPARSE_FPS = 0.5
SPARSE_RENDERINGS: dict[str, dict[str, Any]] = {"plain": {}, "weak": {"noise_sd": 6.0}}
SPARSE_SEEDS = (0, 1, 2, 3)
SPARSE_WINDOW = 4  # frames per window of the k-means reference: 8 s at 0.5 fps


def window_kmeans(feats: list[np.ndarray], k: int, win: int = SPARSE_WINDOW, seed: int = 0) -> list[np.ndarray]:
    """The issue's reference on helmet footage: k-means on the means of consecutive windows of ``win``
    frames (8 s at 0.5 fps), every frame labelled with its window's cluster."""
    means = [np.stack([f[a:a + win].mean(0) for a in range(0, len(f), win)]) for f in feats]
    lab = run_kmeans(means, max(min(k, sum(len(m) for m in means)), 1), seed)
    return [np.repeat(c, win)[:len(f)] for c, f in zip(lab, feats)]


def sparse_sets(data: Path, quick: bool, render_kw: dict[str, Any], seed: int,
                ) -> list[tuple[str, str, list[str], list[np.ndarray], list[list[str]], list[str] | None]]:
    """(name, split, video names, features, labels, task per video or None) at 15 fps, before sampling:
    one set per Breakfast task, 50Salads (two sets), the drilling rig, and the issue's six-clip
    geometry (two tasks, each one steady recording in its own place, cut in three)."""
    dev = breakfast_sets(data, DEV_TASKS, max_sets=1)
    held = {**breakfast_sets(data, HELD_OUT_TASKS, max_sets=1), **({} if quick else {**salads_sets(data, max_sets=2), **drilling_set(data)})}
    out: list[tuple[str, str, list[str], list[np.ndarray], list[list[str]], list[str] | None]] = []
    for split, sets in (("dev", dev), ("held_out", held)):
        for si, (sname, vids) in enumerate(sets.items()):
            names = [re.sub(r"[^A-Za-z0-9_-]", "_", v) for v, _ in vids]
            out.append((sname, split, names, render(vids, seed=si + 10 * seed, **render_kw), [labs for _, labs in vids], None))
    pairs = {k: v[:1] for k, v in TWO_LEVEL_PAIRS.items()} if quick else TWO_LEVEL_PAIRS
    for split, plist in pairs.items():
        for pi, (ta, tb) in enumerate(plist):
            vids, task_of, site = tasks_in_places(data, (ta, tb), 4, 2.0, 200 + pi)
            steady = [f + site[t] for f, t in zip(render(vids, seed=100 + pi + 10 * seed, style_sd=0.0, **render_kw), task_of)]
            truths = [labs for _, labs in vids]
            names, feats, labs, tasks = cut_in_three(*one_clip_per_task(steady, truths, task_of, (ta, tb)))
            out.append((f"six clips/{ta}+{tb}", split, names, feats, labs, tasks))
    return out


def sparse_scores(labs: list[list[str]], preds: list[np.ndarray], names: list[str], truth: np.ndarray,
                  task_frames: np.ndarray | None) -> dict[str, Any]:
    """AMI per frame, per-video MoF and F1@50, activities per clip; with tasks, the AMI within each task and NMI(activity, task)."""
    from sklearn.metrics import adjusted_mutual_info_score, normalized_mutual_info_score

    s = scores(labs, preds, names)
    pp = np.concatenate(preds)
    r = {"ami": float(adjusted_mutual_info_score(truth, pp)), "mof": s["mof"], "f1@50": s["f1@50"],
         "activities_per_clip": float(np.mean([len(np.unique(q)) for q in preds]))}
    if task_frames is not None:
        r["ami_within_task"] = float(np.mean([adjusted_mutual_info_score(truth[task_frames == u], pp[task_frames == u])
                                              for u in np.unique(task_frames).tolist()]))
        r["task_nmi"] = float(normalized_mutual_info_score(task_frames, pp))
    return r


def sparse_part(data: Path, quick: bool) -> dict[str, Any]:
    """A frame every 2 s, as on the real helmet footage of the issue (``segment-features --fps 0.5``):
    HandClust with defaults against k-means at the K it found, on frames and on 8 s window means (the
    issue's reference), per frame AMI against the truth; for the six clips of two tasks, the AMI
    within each task (the issue scores the framing clip alone), the activities per clip and
    NMI(activity, task). Real label sequences, rendered features (plain, and "weak": k-means on 8 s
    windows near the real helmet footage's AMI), rendering seeds averaged."""
    seeds = SPARSE_SEEDS[:1] if quick else SPARSE_SEEDS
    out: dict[str, Any] = {"kind": "real label sequences sampled every 2 s (0.5 fps), rendered features (render(); plain and "
                                   f"weak {SPARSE_RENDERINGS['weak']}), {len(seeds)} rendering seeds",
                           "fps": SPARSE_FPS, "window_frames": SPARSE_WINDOW, "seeds": list(seeds), "sets": {}}
    for rname, rkw in SPARSE_RENDERINGS.items():
        per_set: dict[str, list[dict[str, Any]]] = {}
        split_of: dict[str, str] = {}
        for seed in seeds:
            for sname, split, names, feats, labs, tasks in sparse_sets(data, quick, rkw, seed):
                feats = [f[::SPARSE_STEP] for f in feats]
                labs = [t[::SPARSE_STEP] for t in labs]
                truth = np.concatenate([np.asarray(t, dtype=object) for t in labs])
                task_frames = (np.concatenate([np.full(len(t), u, dtype=object) for t, u in zip(labs, tasks)]) if tasks else None)
                preds, ev = run_handclust(names, feats, labs, SPARSE_FPS)
                k = int(ev["k"]) or 1

                row = {"k_found": k, "handclust": sparse_scores(labs, preds, names, truth, task_frames),
                       "kmeans_frames_at_k_found": sparse_scores(labs, run_kmeans(feats, k), names, truth, task_frames),
                       "kmeans_8s_windows_at_k_found": sparse_scores(labs, window_kmeans(feats, k), names, truth, task_frames),
                       "true_activities_per_clip": float(np.mean([len(set(t)) for t in labs])), "true_k": len(set(truth.tolist()))}
                per_set.setdefault(sname, []).append(row)
                split_of[sname] = split
        for sname, rows in per_set.items():
            avg: dict[str, Any] = {"split": split_of[sname], "rendering": rname, "seeds": len(rows)}
            for key in ("k_found", "true_k", "true_activities_per_clip"):
                avg[key] = round(float(np.mean([r[key] for r in rows])), 2)
            for m in ("handclust", "kmeans_frames_at_k_found", "kmeans_8s_windows_at_k_found"):
                avg[m] = {q: round(float(np.mean([r[m][q] for r in rows])), 4) for q in rows[0][m]}
            key = "ami_within_task" if "ami_within_task" in avg["handclust"] else "ami"
            avg["scored_by"] = key
            out["sets"][f"{rname}/{sname}"] = avg
            logging.getLogger("real").warning("sparse %s %s: %s handclust %.3f | k-means 8 s windows %.3f | frames %.3f; activities per clip %.1f (true %.1f)",
                                              rname, sname, key, avg["handclust"][key], avg["kmeans_8s_windows_at_k_found"][key],
                                              avg["kmeans_frames_at_k_found"][key], avg["handclust"]["activities_per_clip"],
                                              avg["true_activities_per_clip"])
    summ: dict[str, Any] = {}
    for rname in SPARSE_RENDERINGS:
        for split in ("dev", "held_out"):
            rows = [r for n, r in out["sets"].items() if n.startswith(rname + "/") and r["split"] == split]
            if not rows:
                continue
            gaps = [r["handclust"][r["scored_by"]] - r["kmeans_8s_windows_at_k_found"][r["scored_by"]] for r in rows]
            summ[f"{rname}, {split}"] = {
                "sets": len(rows),
                "handclust_ami": round(float(np.mean([r["handclust"][r["scored_by"]] for r in rows])), 4),
                "kmeans_8s_windows_ami": round(float(np.mean([r["kmeans_8s_windows_at_k_found"][r["scored_by"]] for r in rows])), 4),
                "kmeans_frames_ami": round(float(np.mean([r["kmeans_frames_at_k_found"][r["scored_by"]] for r in rows])), 4),
                "handclust_at_or_above_8s_windows": int(sum(g >= 0 for g in gaps)),
                "largest_shortfall_to_8s_windows": round(max(0.0, -min(gaps)), 4),
                "handclust_f1@50": round(float(np.mean([r["handclust"]["f1@50"] for r in rows])), 4),
                "activities_per_clip": round(float(np.mean([r["handclust"]["activities_per_clip"] for r in rows])), 2),
                "true_activities_per_clip": round(float(np.mean([r["true_activities_per_clip"] for r in rows])), 2)}
    out["summary"] = summ
    return out


def summarise(sets: dict[str, Any]) -> dict[str, Any]:
    summ: dict[str, Any] = {}
    for split in ("dev", "held_out"):
        rows = [r for r in sets.values() if r.get("split") == split]
        if not rows:
            continue
        methods = [m for m, v in rows[0].items() if isinstance(v, dict) and "mof" in v]
        summ[split] = {m: {k: round(float(np.mean([r[m][k] for r in rows if m in r])), 4)
                           for k in ("mof", "f1@50", "edit", "whole_set_mof", "nmi") if all(k in r.get(m, {}) for r in rows)}
                       for m in methods}
        summ[split]["sets"] = len(rows)
    return summ


def scores_part(data: Path, variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    d = data / "asot" / "examples" / "data"
    out: dict[str, Any] = {"kind": "real model scores (a trained model's per-frame action scores), per-frame truth", "sets": {}}
    for npy in sorted((d / "affinity").glob("*.npy")):
        x = np.load(npy).astype(np.float32)
        t = [ln.strip() for ln in (d / "gt" / npy.stem).read_text().splitlines() if ln.strip()]
        n = min(len(x), len(t))
        names, feats, truths = [npy.stem.replace("-", "_")], [x[:n]], [t[:n]]
        true_k = len(set(t[:n]))
        var = {"handclust_k_given": {"n_clusters": true_k}, **variants}
        out["sets"][npy.stem] = {"split": "held_out", **evaluate_set(npy.stem, names, feats, truths, FPS["asot"], var)}
    out["summary"] = summarise(out["sets"])
    return out


def ikea_model(f: Path) -> str:
    """The model variant an IKEA csv holds, from its file name."""
    return f.name.split("__test__")[1].split("__pretrained")[0]


def read_ikea(f: Path) -> tuple[str, Any, np.ndarray, np.ndarray]:
    """One IKEA csv: the model's name, its rows in time order per video, the averaged class
    probabilities ``(n, 33)`` and the true label per row (pandas reads the "NA" class as missing)."""
    import pandas as pd

    df = pd.read_csv(f).sort_values(["case_name", "start_timestamp"]).reset_index(drop=True)
    probs = np.stack([np.asarray(list(json.loads(s).values()), np.float32) for s in df["avg_probs_json"]])
    truth = df["gt_label_name"].fillna("NA").astype(str).to_numpy(object)
    return ikea_model(f), df, probs, truth


def against_kmeans(models: dict[str, Any], metric: str) -> dict[str, Any]:
    """The floor the issue sets: HandClust with defaults at least matches k-means at the K it found."""
    gaps = {m: round(v["handclust"][metric] - v["kmeans_at_k_found"][metric], 4) for m, v in models.items()}
    if not gaps:
        return {}
    return {"models": len(gaps), "handclust_at_or_above_kmeans_ami": sum(g >= 0 for g in gaps.values()),
            "largest_shortfall_ami": round(-min(min(gaps.values()), 0.0), 4), "handclust_minus_kmeans_ami": gaps}


def ikea_part(data: Path, quick: bool, group: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Real segments: each true segment's model probabilities clustered jointly across videos."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

    from handclust.config import load_config
    from handclust.core.clustering import group_segments
    from handclust.core.metrics import segmentation_scores

    files = sorted((data / "ikea").glob("*.csv"))
    if quick:
        files = files[:2]
    out: dict[str, Any] = {"kind": "real segments with a real model's averaged probabilities (IKEA ASM test split)", "models": {}}
    cfg = load_config(None, ["cluster.scaling.features=whole"]).cluster
    for f in files:
        model, df, probs, truth = read_ikea(f)
        clip_ids = df["case_name"].to_numpy(object)
        dur = df["duration_frames"].to_numpy(np.float64) / FPS["ikea"]
        g = group_segments({"features": probs}, clip_ids, dur, cfg)
        act = g.clustering.activity
        # Each row is a true bout here, so the temporal model's premise (a bout spans several
        # segments) does not hold: also scored without it.
        no_t = group_segments({"features": probs}, clip_ids, dur, cfg.model_copy(update={"temporal": False})).clustering.activity
        k = max(g.clustering.k, 1)
        fused = g.fusion.fused
        km = KMeans(n_clusters=k, n_init=4, random_state=0).fit_predict(fused)
        w = df["duration_frames"].to_numpy()

        def frame_scores(pred: np.ndarray, truth: np.ndarray = truth, w: np.ndarray = w, clip_ids: np.ndarray = clip_ids) -> dict[str, float]:
            t = np.repeat(truth, w)
            p = np.repeat(pred, w)
            v = np.repeat(clip_ids, w)
            s = segmentation_scores(t, p, v)
            return {"whole_set_mof": round(s["whole_set"]["mof"], 4), "mof": round(s["per_video"]["mof"], 4),
                    "ami_segments": round(float(adjusted_mutual_info_score(truth, pred)), 4),
                    "ari_segments": round(float(adjusted_rand_score(truth, pred)), 4)}

        out["models"][model] = {"segments": len(df), "videos": int(df["case_name"].nunique()), "true_k": int(df["gt_label"].nunique()),
                                "k_found": int(g.clustering.k), "noise_rate": round(g.clustering.noise_rate, 3),
                                "handclust": frame_scores(act), "handclust_temporal_off": frame_scores(no_t),
                                "kmeans_at_k_found": frame_scores(km),
                                "model_argmax": frame_scores(probs.argmax(1))}
        logging.getLogger("real").warning("ikea %s: handclust %s kmeans %s k=%d", model, out["models"][model]["handclust"],
                                          out["models"][model]["kmeans_at_k_found"], g.clustering.k)
    if out["models"]:
        out["summary"] = against_kmeans(out["models"], "ami_segments")
    return out


def ikea_frames_part(data: Path, quick: bool, fps: float = 5.0) -> dict[str, Any]:
    """The IKEA segments as a user would give them to ``handclust segment-features``: each true
    segment's averaged probabilities repeated for every frame it spans (at ``fps``), so HandClust cuts
    its own units and its temporal model sees where the features change. Scored per frame against
    k-means at the K HandClust found, on the same frames."""
    from sklearn.metrics import adjusted_mutual_info_score

    files = sorted((data / "ikea").glob("*.csv"))
    if quick:
        files = files[:2]
    out: dict[str, Any] = {"kind": "real segments with a real model's averaged probabilities (IKEA ASM test split), "
                                   f"repeated per frame at {fps:g} fps and run through segment-features", "fps": fps, "models": {}}
    for f in files:
        model, df, probs, truth = read_ikea(f)
        reps = np.maximum(np.round(df["duration_frames"].to_numpy(np.float64) / FPS["ikea"] * fps), 1).astype(int)
        names, feats, truths = [], [], []
        for case, rows in df.groupby("case_name", sort=True).indices.items():
            names.append(re.sub(r"[^A-Za-z0-9_-]", "_", str(case)))
            feats.append(np.repeat(probs[rows], reps[rows], axis=0))
            truths.append(np.repeat(truth[rows], reps[rows]).tolist())
        preds, ev = run_handclust(names, feats, truths, fps)
        k = int(ev["k"]) or 1
        km = run_kmeans(feats, k)
        t = np.concatenate([np.asarray(x, dtype=object) for x in truths])
        out["models"][model] = {"frames": int(len(t)), "k_found": int(ev["k"]),
                                "handclust": {**scores(truths, preds, names),
                                              "ami_frames": round(float(adjusted_mutual_info_score(t, np.concatenate(preds))), 4)},
                                "kmeans_at_k_found": {**scores(truths, km, names),
                                                      "ami_frames": round(float(adjusted_mutual_info_score(t, np.concatenate(km))), 4)}}
        h, m = out["models"][model]["handclust"], out["models"][model]["kmeans_at_k_found"]
        logging.getLogger("real").warning("ikea frames %s: k=%d handclust AMI %.3f whole MoF %.3f | kmeans AMI %.3f whole MoF %.3f",
                                          model, k, h["ami_frames"], h["whole_set_mof"], m["ami_frames"], m["whole_set_mof"])
    if out["models"]:
        out["summary"] = against_kmeans(out["models"], "ami_frames")
    return out


IKEA_FUSION_MODELS = ("clip_based__c3d_and_p3d__c3d", "clip_based__i3d__depth", "frame_based__resnet50", "pose_based__HCN_32")


def ikea_fusion_part(data: Path) -> dict[str, Any]:
    """Real multi-modal late fusion: the same IKEA segments described by four models on four inputs
    (RGB clips, depth, single frames, body pose), each model's probabilities one modality. Each alone,
    fused with confidence weights (the default), with equal weights, and with forward selection.
    The temporal model is off: every row is a true bout."""
    from sklearn.metrics import adjusted_mutual_info_score

    from handclust.config import load_config
    from handclust.core.clustering import group_segments

    mods: dict[str, np.ndarray] = {}
    base = None
    truth = np.zeros(0, object)
    for f in sorted((data / "ikea").glob("*.csv")):
        if ikea_model(f) not in IKEA_FUSION_MODELS:
            continue
        model, df, probs, t = read_ikea(f)
        if base is None:
            base, truth = df, t
        mods[model] = probs
    if base is None:
        return {"skipped": "no IKEA csv files"}
    cids = base["case_name"].to_numpy(object)
    dur = base["duration_frames"].to_numpy(np.float64) / FPS["ikea"]
    out: dict[str, Any] = {"kind": "real segments, four real models' probabilities as four modalities", "models": list(mods),
                           "ami": {}}
    variants = {"confidence weights (default)": [], "equal weights": ["cluster.weighting=equal"],
                "forward selection": ["cluster.select_modalities=true"]}
    for m in mods:
        g = group_segments({m: mods[m]}, cids, dur, load_config(None, ["cluster.temporal=false"]).cluster)
        out["ami"][f"{m} alone"] = round(float(adjusted_mutual_info_score(truth, g.clustering.activity)), 4)
    for name, ov in variants.items():
        g = group_segments(mods, cids, dur, load_config(None, ["cluster.temporal=false", *ov]).cluster)
        out["ami"][f"fused: {name}"] = round(float(adjusted_mutual_info_score(truth, g.clustering.activity)), 4)
        out.setdefault("weights", {})[name] = {m: round(s.weight, 3) for m, s in g.fusion.scores.items()}
    logging.getLogger("real").warning("ikea fusion: %s", out["ami"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sets (a few minutes)")
    ap.add_argument("--sets", nargs="+", default=["sequences", "sequences_slow", "scores", "ikea", "ikea_fusion", "two_levels",
                                                  "three_tasks", "filed", "ikea_frames", "sparse"])
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    data = os.environ.get("HANDCLUST_DATA")
    if not data or not Path(data).is_dir():
        print("benchmarks/real.py: HANDCLUST_DATA is not set to the fetched real sets (see ../shared/DATA.md); nothing measured")
        return 0
    root = Path(data)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Parts not asked for keep their last result; each part is written as soon as it is done.
    res: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    res.update({"data": "real (DATA.md); see each part's 'kind' for what is real", "quick": args.quick})
    parts = {"sequences": lambda: sequences_part(root, args.quick, {}),
             "sequences_slow": lambda: sequences_part(root, args.quick, SHARED_VARIANT, SLOW), "scores": lambda: scores_part(root, {}),
             "ikea": lambda: ikea_part(root, args.quick), "ikea_fusion": lambda: ikea_fusion_part(root),
             "two_levels": lambda: two_levels_part(root, args.quick), "three_tasks": lambda: three_tasks_part(root, args.quick),
             "filed": lambda: filed_part(root, args.quick),
             "ikea_frames": lambda: ikea_frames_part(root, args.quick), "sparse": lambda: sparse_part(root, args.quick)}
    for name in args.sets:
        t0 = time.perf_counter()
        res[name] = {**parts[name](), "seconds": round(time.perf_counter() - t0, 1)}
        out.write_text(json.dumps(res, indent=2, default=str))
    print(json.dumps({k: v.get("summary") for k, v in res.items() if isinstance(v, dict) and "summary" in v}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
