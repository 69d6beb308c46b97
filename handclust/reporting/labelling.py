"""Name each discovered activity with a vision-language model (Gemini, via google-genai).

For each cluster, keyframes from its most typical segments (:func:`typical_segments`: highest HDBSCAN
membership, closest to the cluster's centre, one per clip first) are re-decoded from the clips and
sent with a short prompt; the answer is a
JSON object ``{"label": ..., "description": ...}``. Each cluster is one job that decodes its own
keyframes and asks the model, on the run's executor (:mod:`handclust.runtime.executor`): threads in
this process with the local runner, one Ray task per cluster with the Ray runner (so on a cluster
the decoding happens on workers that can read the footage), at most ``labels.concurrency`` requests
in flight. A :class:`Labeller` of your own (``handclust.discover(..., labeller=...)``) names them
instead, called in this process. Requests retry with exponential backoff on rate limits (429) and
server errors (5xx), and fail per cluster, never per run: a cluster whose request failed keeps
the name ``activity N`` and its error is recorded in ``labels.parquet``. Answers are cached by
the cluster's member segments, so a rerun does not pay twice.

No API key (``GEMINI_API_KEY`` or ``GOOGLE_API_KEY``) means no labelling, said in the summary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from handclust import schema
from handclust.config import LabelConfig
from handclust.extras import api_key as api_key
from handclust.io import layout
from handclust.io.storage import OutputStore
from handclust.runtime.executor import Executor, LocalExecutor

log = logging.getLogger(__name__)
# CPUs one labelling Ray task asks for: it mostly waits on the API (tests/test_cluster_configs.py places it).
TASK_CPUS = 0.25

LABELS = schema.LABELS  # every table schema lives in handclust.schema
SPEND = ("requests", "input_tokens", "output_tokens", "usd")


class Budget:
    """The run's labelling budget (``labels.max_requests``, ``labels.max_cost_usd``), shared by every request.

    :meth:`reserve` is asked before each request with its worst case (estimated input, the output
    cap); it refuses when that could take the spend past a limit, so the limits are never exceeded.
    :meth:`settle` replaces the reservation with what the answer's usage metadata says it cost.
    Thread-safe; on Ray one actor holds it (:meth:`~handclust.runtime.executor.Executor.shared`).
    """

    def __init__(self, cfg: LabelConfig):
        import threading

        from handclust.prices import gemini_price

        self.max_requests, self.max_usd = cfg.max_requests, cfg.max_cost_usd
        self.price = gemini_price(cfg.model, cfg.usd_per_mtok)
        self.requests, self.usd, self.reserved = 0, 0.0, 0.0
        self._lock = threading.Lock()

    def reserve(self, worst_usd: float) -> bool:
        with self._lock:
            if self.max_requests is not None and self.requests + 1 > self.max_requests:
                return False
            if self.max_usd is not None and self.usd + self.reserved + worst_usd > self.max_usd + 1e-12:
                return False
            self.requests += 1
            self.reserved += worst_usd
            return True

    def settle(self, worst_usd: float, usd: float) -> None:
        with self._lock:
            self.reserved -= worst_usd
            self.usd += usd

    def get_price(self) -> tuple[float, float, str]:
        return self.price

    def reached(self) -> str:
        return (f"budget reached: {self.requests} requests, ${self.usd:.4f} of labels.max_requests={self.max_requests}, "
                f"labels.max_cost_usd={self.max_usd}; raise labels.max_requests / labels.max_cost_usd and rerun "
                "(named activities come from the cache)")


class Labeller(Protocol):
    """What names an activity: called with one cluster's typical segments (keyframes decoded), returns
    its record: ``label`` and ``description`` (None when it could not name it), ``status`` (``ok``, or
    ``error`` / ``budget`` with the reason in ``error``), and optionally its spend (``requests``,
    ``input_tokens``, ``output_tokens``, ``usd``). Optional: ``setup()`` (called once before the
    first cluster) and ``model`` (the name ``labels.parquet`` and the answer cache record; default
    ``labels.model``). :class:`GeminiLabeller` is the default one."""

    def __call__(self, ex: ClusterExamples) -> dict[str, Any]: ...

PROMPT = (
    "These keyframes come from a helmet camera worn by a construction worker (masonry). They show "
    "{n} examples of one activity that repeats in the footage. Name the activity in 2-5 words, the "
    "way a site foreman would (e.g. 'laying bricks', 'scooping mortar', 'walking between piles', "
    "'idle'), and describe in one sentence what is visible that supports it. Answer as JSON: "
    '{{"label": "...", "description": "..."}}'
)


@dataclass(frozen=True)
class ClusterExamples:
    """One cluster's typical segments: keyframes, or the spans to re-decode them from (``with_keyframes``)."""

    cluster: int
    segment_ids: list[str]
    keyframes: list[npt.NDArray[np.uint8]]
    spans: tuple[tuple[str, float, float], ...] = ()  # (clip path, t_start, t_end) per typical segment


def with_keyframes(ex: ClusterExamples, cfg: LabelConfig) -> tuple[ClusterExamples, list[str]]:
    """``ex`` with its keyframes decoded from ``spans`` (unless it has them), and the decode errors."""
    if ex.keyframes or not ex.spans:
        return ex, []
    from handclust.io.video import VideoError, read_range

    frames: list[npt.NDArray[np.uint8]] = []
    errors = []
    for path, t0, t1 in ex.spans:
        try:
            frames.extend(read_range(path, t0, t1, cfg.frames_per_segment, width=cfg.image_width))
        except VideoError as exc:
            errors.append(str(exc))
    return replace(ex, keyframes=frames), errors


def name_cluster(ex: ClusterExamples, cfg: LabelConfig, labeller: Callable[[ClusterExamples], dict[str, Any]]) -> dict[str, Any]:
    """Decode ``ex``'s keyframes where this runs, then ask ``labeller``; a record for ``labels.parquet``."""
    ex, errors = with_keyframes(ex, cfg)
    for err in errors:
        log.warning("keyframes for activity %d: %s", ex.cluster, err)
    if not ex.keyframes:
        return {"label": None, "description": None, "status": "error",
                "error": "no keyframe could be decoded (" + "; ".join(errors[:2]) + "); is the footage still where the run found it?"}
    return labeller(ex)


def _name_with_gemini(ex: ClusterExamples, cfg: LabelConfig, key: str, budget: Budget) -> dict[str, Any]:
    """One labelling job: one cluster, decoded and named (Gemini) wherever the executor runs it."""
    return name_cluster(ex, cfg, GeminiLabeller(cfg, key, budget))


def _task_failed(ex: ClusterExamples, exc: Exception) -> dict[str, Any]:
    """The record of a cluster whose job itself failed (its worker lost past its retries): this cluster only."""
    return {"label": None, "description": None, "status": "error",
            "error": f"labelling task failed: {exc.__class__.__name__}: {str(exc)[:300]} (rerun to retry)"}


def typical_segments(labels: npt.NDArray[np.int32], probs: npt.NDArray[np.floating], points: npt.NDArray[np.floating], n: int,
                     clip_ids: npt.NDArray[Any] | None = None) -> dict[int, npt.NDArray[np.int64]]:
    """Row indices of the ``n`` most typical members of each cluster (the one rule: labelling and the report).

    Score: HDBSCAN membership plus nearness to the cluster's centre (the median of its members'
    ``points``; 1 at the centre, 0 at the farthest member; ``points`` with no columns: membership
    alone). With ``clip_ids``, one segment per clip before a second from the same clip, so the
    examples show the activity rather than one clip's look.
    """
    out = {}
    points = np.asarray(points, dtype=np.float64).reshape(len(labels), -1)
    for c in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero(labels == c)
        score = np.asarray(probs, dtype=np.float64)[idx]
        if points.shape[1]:
            d = np.linalg.norm(points[idx] - np.median(points[idx], axis=0), axis=1)
            score = score + 1.0 - d / max(float(d.max()), 1e-9)
        order = np.argsort(-score, kind="stable")
        if clip_ids is not None:
            seen: dict[Any, int] = {}
            rank = np.zeros(len(order), dtype=np.int64)  # 0 for a clip's best member, 1 for its second, ...
            for i, k in enumerate(np.asarray(clip_ids)[idx][order]):
                rank[i] = seen.get(k, 0)
                seen[k] = rank[i] + 1
            order = order[np.argsort(rank, kind="stable")]
        out[int(c)] = idx[order[:n]]
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

    def __init__(self, cfg: LabelConfig, key: str, budget: Budget | None = None):
        self.cfg = cfg
        self._key = key
        self._client: Any = None
        self.budget = budget or Budget(cfg)

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
        prompt = PROMPT.format(n=len(ex.segment_ids))
        parts.append(prompt)
        gen_cfg = types.GenerateContentConfig(temperature=0.2, response_mime_type="application/json",
                                              max_output_tokens=self.cfg.max_output_tokens)
        from handclust.prices import gemini_image_tokens, gemini_usd

        price = self.budget.get_price()
        # An upper bound of the input (text at >= 1 character per token) and the output cap: the worst case.
        tokens_in = sum(gemini_image_tokens(f.shape[1], f.shape[0]) for f in ex.keyframes) + len(prompt)
        worst = gemini_usd(tokens_in, self.cfg.max_output_tokens, price)
        spend = {"requests": 0, "input_tokens": 0, "output_tokens": 0, "usd": 0.0}

        def charge(resp: Any) -> None:
            usage = getattr(resp, "usage_metadata", None) if resp is not None else None
            if resp is None:  # an error answer: not billed
                got_in, got_out = 0, 0
            elif usage is not None and usage.prompt_token_count is not None:
                got_in = int(usage.prompt_token_count or 0)
                got_out = int(usage.candidates_token_count or 0) + int(getattr(usage, "thoughts_token_count", 0) or 0)
            else:  # no usage metadata: count the worst case
                got_in, got_out = tokens_in, self.cfg.max_output_tokens
            usd = gemini_usd(got_in, got_out, price)
            self.budget.settle(worst, usd)
            spend.update(requests=spend["requests"] + 1, input_tokens=spend["input_tokens"] + got_in,
                         output_tokens=spend["output_tokens"] + got_out, usd=spend["usd"] + usd)

        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            if not self.budget.reserve(worst):
                reached = self.budget.reached()
                return {"label": None, "description": None, "status": "budget",
                        "error": reached + (f" (after: {last})" if last else ""), **spend}
            resp = None
            try:
                try:
                    resp = self._client.models.generate_content(model=self.cfg.model, contents=parts, config=gen_cfg)
                finally:
                    charge(resp)
                label, desc = parse_answer(resp.text or "")
                return {"label": label, "description": desc, "status": "ok", "error": None, **spend}
            except errors.APIError as exc:
                code = getattr(exc, "code", None)
                last = f"Gemini API error {code}: {getattr(exc, 'message', exc)}"
                retryable = code in (408, 429) or (isinstance(code, int) and code >= 500)
                if not retryable or attempt == self.cfg.max_retries:
                    break
                time.sleep(max(self.cfg.backoff_s * 2**attempt, _retry_after_s(exc)))
            except (ValueError, json.JSONDecodeError) as exc:
                last = f"unreadable answer from {self.cfg.model}: {exc}"
                break
            except Exception as exc:
                last = f"request to {self.cfg.model} failed: {exc.__class__.__name__}: {exc}"
                if attempt == self.cfg.max_retries:
                    break
                time.sleep(self.cfg.backoff_s * 2**attempt)
        hint = " (check GEMINI_API_KEY)" if "401" in last or "403" in last else " (rerun to retry)"
        return {"label": None, "description": None, "status": "error", "error": last + hint, **spend}


def _retry_after_s(exc: Exception) -> float:
    """Seconds the server asked to wait (``Retry-After``, seconds or an HTTP date), else 0; capped at 300 s."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    raw = headers.get("retry-after") if headers is not None else None
    if not raw:
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            wait = parsedate_to_datetime(str(raw)).timestamp() - time.time()
        except (TypeError, ValueError):
            return 0.0
    return min(max(wait, 0.0), 300.0)


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
                   labeller: Labeller | None = None, executor: Executor | None = None) -> pa.Table:
    """Label every cluster (cached answers reused) and write ``labels.parquet``.

    Gemini (``labeller`` None) names each cluster in a job of ``executor`` (the run's: a Ray task per
    cluster on Ray; default: threads of this process), at most ``labels.concurrency`` at once, with one
    :class:`Budget` for all. A ``labeller`` passed in is called in threads of this process.
    """
    key = api_key(cfg)
    model = getattr(labeller, "model", None) or cfg.model
    rows: list[dict[str, Any]] = []
    todo: list[ClusterExamples] = []
    for ex in examples:
        cached = f"labels/{_signature(ex, model)}.json"
        if store.exists(cached):
            rows.append({**store.read_json(cached), "status": "cached", "requests": 0, "input_tokens": 0, "output_tokens": 0, "usd": 0.0})
        else:
            todo.append(ex)
    if todo and labeller is None and key is None:
        for ex in todo:
            rows.append({"cluster": ex.cluster, "label": None, "description": None, "status": "skipped",
                         "error": "no API key: set GEMINI_API_KEY to name activities", "model": model,
                         "segment_ids": ex.segment_ids})
        todo = []
    if todo:
        if labeller is None:
            # At most labels.concurrency requests in flight (the API's rate limit, not the executor's).
            on = executor or LocalExecutor()
            budget = on.shared(Budget, cfg)  # one budget for every job of the run
            answers = on.map(_name_with_gemini, todo, args=(cfg, key or "", budget), num_cpus=TASK_CPUS, max_retries=2,
                             concurrency=cfg.concurrency, on_error=_task_failed)
        else:
            if hasattr(labeller, "setup"):
                labeller.setup()
            answers = LocalExecutor().map(name_cluster, todo, args=(cfg, labeller), concurrency=cfg.concurrency)
        for ex, ans in zip(todo, answers, strict=True):
            rec = {"cluster": ex.cluster, "model": model, "segment_ids": ex.segment_ids, **ans}
            if ans["status"] == "ok":
                store.write_json(f"labels/{_signature(ex, model)}.json", rec)
            elif ans["status"] == "budget":
                log.info("activity %d not named: %s", ex.cluster, ans["error"])
            else:
                log.warning("labelling activity %d failed: %s", ex.cluster, ans["error"])
            rows.append(rec)
    rows.sort(key=lambda r: r["cluster"])
    zero = {"requests": 0, "input_tokens": 0, "output_tokens": 0, "usd": 0.0}
    tbl = pa.Table.from_pylist([{k: r.get(k, zero.get(k)) if r.get(k) is not None else zero.get(k) for k in LABELS.names}
                                for r in rows], schema=LABELS)
    store.write_table(layout.LABELS, tbl)
    return tbl


def gather_examples(segments: pa.Table, clips: pa.Table, labels: npt.NDArray[np.int32], probs: npt.NDArray[np.float32],
                    fused: npt.NDArray[np.float32], cfg: LabelConfig) -> list[ClusterExamples]:
    """Each cluster's most typical segments, as spans to re-decode keyframes from (raw frames are never
    stored). Nothing is decoded here: the job that names a cluster decodes its keyframes, and a
    cluster answered from the cache needs none."""
    paths = dict(zip(clips.column("clip_id").to_pylist(), clips.column("path").to_pylist(), strict=True))
    seg = segments.select(["segment_id", "clip_id", "t_start", "t_end"]).to_pylist()
    out = []
    clip_ids = segments.column("clip_id").to_numpy(zero_copy_only=False)
    for c, idx in typical_segments(labels, probs, fused, cfg.n_segments, clip_ids=clip_ids).items():
        rows = [seg[int(i)] for i in idx]
        out.append(ClusterExamples(c, [r["segment_id"] for r in rows], [],
                                   tuple((paths[r["clip_id"]], float(r["t_start"]), float(r["t_end"])) for r in rows)))
    return out


def labels_summary(tbl: pa.Table) -> dict[str, Any]:
    """Counts of ``labels.parquet``'s statuses and its first errors (run.json's summary and the report show this)."""
    st = tbl.column("status").to_pylist()
    errors = tbl.column("error").to_pylist() if "error" in tbl.column_names else []
    out = {"labelled": sum(s in ("ok", "cached") for s in st), "failed": st.count("error"), "skipped": st.count("skipped"),
           "errors": sorted({e for e in errors if e and not e.startswith("budget reached")})[:5]}
    if "budget" in st:
        out["budget_stopped"] = st.count("budget")
        out["budget"] = next(e for s, e in zip(st, errors, strict=True) if s == "budget")
    return out


def labels_spend(tbl: pa.Table, cfg: LabelConfig) -> dict[str, Any]:
    """This run's labelling spend (summed from ``labels.parquet``) with the budget and price it ran under."""
    from handclust.prices import gemini_price

    cols = {k: (tbl.column(k).to_pylist() if k in tbl.column_names else []) for k in SPEND}
    price = gemini_price(cfg.model, cfg.usd_per_mtok)
    return {"requests": int(sum(v or 0 for v in cols["requests"])), "input_tokens": int(sum(v or 0 for v in cols["input_tokens"])),
            "output_tokens": int(sum(v or 0 for v in cols["output_tokens"])), "usd": float(sum(v or 0.0 for v in cols["usd"])),
            "model": cfg.model, "usd_per_mtok": [price[0], price[1]], "price": price[2],
            "max_requests": cfg.max_requests, "max_cost_usd": cfg.max_cost_usd}
