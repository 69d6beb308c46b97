"""Name each discovered activity with a vision-language model (Gemini, via google-genai).

For each cluster, keyframes from its most typical segments (highest HDBSCAN membership, closest to
the cluster centroid) are re-decoded from the clips and sent with a short prompt; the answer is a
JSON object ``{"label": ..., "description": ...}``. Requests run concurrently (threads here; one
Ray task per cluster on a cluster), retry with exponential backoff on rate limits (429) and
server errors (5xx), and fail per cluster, never per run: a cluster whose request failed keeps
the name ``activity N`` and its error is recorded in ``labels.parquet``. Answers are cached by
the cluster's member segments, so a rerun does not pay twice.

No API key (``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``) means no labelling, said in the summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from handclust.config import LabelConfig
from handclust.storage import OutputStore

log = logging.getLogger(__name__)

LABELS = pa.schema([
    ("cluster", pa.int32()),
    ("label", pa.string()),
    ("description", pa.string()),
    ("status", pa.string()),  # ok | cached | error | skipped
    ("error", pa.string()),
    ("model", pa.string()),
    ("segment_ids", pa.list_(pa.string())),
])

PROMPT = (
    "These keyframes come from a helmet camera worn by a construction worker (masonry). They show "
    "{n} examples of one activity that repeats in the footage. Name the activity in 2-5 words, the "
    "way a site foreman would (e.g. 'laying bricks', 'scooping mortar', 'walking between piles', "
    "'idle'), and describe in one sentence what is visible that supports it. Answer as JSON: "
    '{{"label": "...", "description": "..."}}'
)


@dataclass(frozen=True)
class ClusterExamples:
    cluster: int
    segment_ids: list[str]
    keyframes: list[npt.NDArray[np.uint8]]


def api_key(cfg: LabelConfig) -> str | None:
    for name in (cfg.api_key_env, "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        if name and os.environ.get(name):
            return os.environ[name]
    return None


def typical_segments(labels: npt.NDArray[np.int32], probs: npt.NDArray[np.float32], fused: npt.NDArray[np.float32],
                     n: int) -> dict[int, npt.NDArray[np.int64]]:
    """Row indices of the ``n`` most typical members of each cluster: high membership, near the centroid."""
    out = {}
    for c in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero(labels == c)
        centroid = fused[idx].mean(axis=0)
        score = probs[idx] + (fused[idx] @ centroid) / max(float(np.linalg.norm(centroid)), 1e-9)
        out[int(c)] = idx[np.argsort(-score, kind="stable")[:n]]
    return out


def _jpeg(frame: npt.NDArray[np.uint8], quality: int = 85) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()


def _signature(ex: ClusterExamples, model: str) -> str:
    return hashlib.sha1(json.dumps([model, sorted(ex.segment_ids)]).encode()).hexdigest()[:16]


class GeminiLabeller:
    """Labeller stage: ``setup()`` builds the client; ``__call__(examples) -> record``."""

    name = "labels"

    def __init__(self, cfg: LabelConfig, key: str):
        self.cfg = cfg
        self._key = key
        self._client: Any = None

    def setup(self) -> None:
        from google import genai
        from google.genai import types

        http = types.HttpOptions(base_url=self.cfg.base_url, api_version="v1beta", timeout=int(self.cfg.timeout_s * 1000)) \
            if self.cfg.base_url else types.HttpOptions(timeout=int(self.cfg.timeout_s * 1000))
        self._client = genai.Client(api_key=self._key, http_options=http)

    def __call__(self, ex: ClusterExamples) -> dict[str, Any]:
        from google.genai import errors, types

        if self._client is None:
            self.setup()
        parts: list[Any] = [types.Part.from_bytes(data=_jpeg(f), mime_type="image/jpeg") for f in ex.keyframes]
        parts.append(PROMPT.format(n=len(ex.segment_ids)))
        gen_cfg = types.GenerateContentConfig(temperature=0.2, response_mime_type="application/json")
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            try:
                resp = self._client.models.generate_content(model=self.cfg.model, contents=parts, config=gen_cfg)
                label, desc = parse_answer(resp.text or "")
                return {"label": label, "description": desc, "status": "ok", "error": None}
            except errors.APIError as exc:
                code = getattr(exc, "code", None)
                last = f"Gemini API error {code}: {getattr(exc, 'message', exc)}"
                retryable = code in (408, 429) or (isinstance(code, int) and code >= 500)
                if not retryable or attempt == self.cfg.max_retries:
                    break
                time.sleep(self.cfg.backoff_s * 2**attempt)
            except (ValueError, json.JSONDecodeError) as exc:
                last = f"unreadable answer from {self.cfg.model}: {exc}"
                break
            except Exception as exc:
                last = f"request to {self.cfg.model} failed: {exc.__class__.__name__}: {exc}"
                if attempt == self.cfg.max_retries:
                    break
                time.sleep(self.cfg.backoff_s * 2**attempt)
        hint = " (check GEMINI_API_KEY)" if "401" in last or "403" in last else " (rerun to retry)"
        return {"label": None, "description": None, "status": "error", "error": last + hint}


def parse_answer(text: str) -> tuple[str, str]:
    s = text.strip()
    if s.startswith("```"):
        s = s.strip("`").split("\n", 1)[-1]
    obj = json.loads(s)
    if isinstance(obj, list) and obj:
        obj = obj[0]
    label = str(obj.get("label", "")).strip()
    if not label:
        raise ValueError("answer has no 'label'")
    return label[:80], str(obj.get("description", "")).strip()[:500]


def label_clusters(store: OutputStore, examples: list[ClusterExamples], cfg: LabelConfig,
                   labeller: Callable[[ClusterExamples], dict[str, Any]] | None = None) -> pa.Table:
    """Label every cluster (cached answers reused) and write ``labels.parquet``."""
    key = api_key(cfg)
    rows: list[dict[str, Any]] = []
    todo: list[ClusterExamples] = []
    for ex in examples:
        cached = f"labels/{_signature(ex, cfg.model)}.json"
        if store.exists(cached):
            rows.append({**store.read_json(cached), "status": "cached"})
        else:
            todo.append(ex)
    if todo and labeller is None and key is None:
        for ex in todo:
            rows.append({"cluster": ex.cluster, "label": None, "description": None, "status": "skipped",
                         "error": "no API key: set GEMINI_API_KEY to name activities", "model": cfg.model,
                         "segment_ids": ex.segment_ids})
        todo = []
    if todo:
        call = labeller or GeminiLabeller(cfg, key or "")
        if hasattr(call, "setup"):
            call.setup()
        with ThreadPoolExecutor(max_workers=cfg.concurrency) as pool:
            answers = list(pool.map(call, todo))
        for ex, ans in zip(todo, answers, strict=True):
            rec = {"cluster": ex.cluster, "model": cfg.model, "segment_ids": ex.segment_ids, **ans}
            if ans["status"] == "ok":
                store.write_json(f"labels/{_signature(ex, cfg.model)}.json", rec)
            else:
                log.warning("labelling activity %d failed: %s", ex.cluster, ans["error"])
            rows.append(rec)
    rows.sort(key=lambda r: r["cluster"])
    tbl = pa.Table.from_pylist([{k: r.get(k) for k in LABELS.names} for r in rows], schema=LABELS)
    store.write_table("labels.parquet", tbl)
    return tbl


def gather_examples(segments: pa.Table, clips: pa.Table, labels: npt.NDArray[np.int32], probs: npt.NDArray[np.float32],
                    fused: npt.NDArray[np.float32], cfg: LabelConfig) -> list[ClusterExamples]:
    """Re-decode keyframes of each cluster's most typical segments (raw frames are never stored)."""
    from handclust.video import VideoError, read_range

    paths = dict(zip(clips.column("clip_id").to_pylist(), clips.column("path").to_pylist(), strict=True))
    seg = segments.select(["segment_id", "clip_id", "t_start", "t_end"]).to_pylist()
    out = []
    for c, idx in typical_segments(labels, probs, fused, cfg.n_segments).items():
        frames: list[npt.NDArray[np.uint8]] = []
        for i in idx:
            s = seg[int(i)]
            try:
                frames.extend(read_range(paths[s["clip_id"]], s["t_start"], s["t_end"], cfg.frames_per_segment, width=cfg.image_width))
            except VideoError as exc:
                log.warning("keyframes for activity %d: %s", c, exc)
        if frames:
            out.append(ClusterExamples(c, [seg[int(i)]["segment_id"] for i in idx], frames))
    return out


def display_names(labels_tbl: pa.Table | None, clusters: list[int]) -> dict[int, str]:
    """``cluster -> name``: the model's label where there is one, else ``activity N``."""
    names = {c: f"activity {c}" for c in clusters}
    if labels_tbl is not None:
        for r in labels_tbl.to_pylist():
            if r["label"]:
                names[int(r["cluster"])] = r["label"]
    return names


def labels_summary(tbl: pa.Table) -> dict[str, Any]:
    st = tbl.column("status").to_pylist()
    return {"labelled": sum(s in ("ok", "cached") for s in st), "failed": st.count("error"), "skipped": st.count("skipped"),
            "errors": sorted({e for e in tbl.column("error").to_pylist() if e})[:5]}
