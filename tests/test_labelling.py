"""Gemini labelling through the real google-genai client against a loopback fake of the REST API."""

from __future__ import annotations

import base64
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from handclust.config import LabelConfig
from handclust.io.storage import OutputStore
from handclust.reporting.labelling import ClusterExamples, GeminiLabeller, label_clusters


class FakeGemini:
    """Answers generateContent; `script` is a list of (status, body[, headers]) consumed per request.
    Each request is recorded with its arrival time (``at``, time.monotonic())."""

    def __init__(self, script: list[tuple[int, dict]] | None = None):
        self.script = list(script or [])
        self.requests: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append({"path": self.path, "key": self.headers.get("x-goog-api-key"), "body": body,
                                       "at": time.monotonic(), "wall": time.time()})
                status, answer, *extra = outer.script.pop(0) if outer.script else (200, outer.ok("laying bricks"))
                data = json.dumps(answer).encode()
                self.send_response(status)
                for name, value in (extra[0] if extra else {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def ok(label: str) -> dict:
        text = json.dumps({"label": label, "description": "a gloved hand places a brick on the wall"})
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
                "usageMetadata": {"promptTokenCount": 1000, "candidatesTokenCount": 30, "thoughtsTokenCount": 70,
                                  "totalTokenCount": 1100}}

    @staticmethod
    def error(code: int, status: str) -> dict:
        return {"error": {"code": code, "message": f"fake {status}", "status": status}}


@pytest.fixture
def fake():
    f = FakeGemini()
    yield f
    f.server.shutdown()


def _examples(n: int = 2) -> list[ClusterExamples]:
    rng = np.random.default_rng(0)
    return [ClusterExamples(c, [f"seg{c}a", f"seg{c}b"], [rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)] * 2) for c in range(n)]


def test_labels_each_cluster_with_keyframes(fake: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    cfg = LabelConfig(base_url=fake.url, backoff_s=0.01)
    tbl = label_clusters(OutputStore(tmp_path), _examples(2), cfg)
    assert tbl.column("label").to_pylist() == ["laying bricks", "laying bricks"]
    assert set(tbl.column("status").to_pylist()) == {"ok"}
    req = fake.requests[0]
    assert req["path"] == f"/v1beta/models/{cfg.model}:generateContent"
    assert req["key"] == "test-key"
    parts = req["body"]["contents"][0]["parts"]
    images = [p for p in parts if "inlineData" in p]
    assert len(images) == 2 and images[0]["inlineData"].get("mimeType", images[0]["inlineData"].get("mime_type")) == "image/jpeg"
    assert base64.urlsafe_b64decode(images[0]["inlineData"]["data"])[:2] == b"\xff\xd8"  # a real JPEG
    # Answers are cached by cluster membership: a rerun makes no request.
    n = len(fake.requests)
    again = label_clusters(OutputStore(tmp_path), _examples(2), cfg)
    assert len(fake.requests) == n and set(again.column("status").to_pylist()) == {"cached"}


def test_rate_limit_is_retried_then_succeeds(fake: FakeGemini, tmp_path: Path):
    fake.script = [(429, FakeGemini.error(429, "RESOURCE_EXHAUSTED")), (503, FakeGemini.error(503, "UNAVAILABLE")),
                   (200, FakeGemini.ok("scooping mortar"))]
    lab = GeminiLabeller(LabelConfig(base_url=fake.url, backoff_s=0.01, concurrency=1), "k")
    rec = lab(_examples(1)[0])
    assert rec["status"] == "ok" and rec["label"] == "scooping mortar"
    assert len(fake.requests) == 3


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_rate_limit_waits_as_long_as_retry_after_says(fake: FakeGemini, form: str):
    """A 429 with Retry-After: the next request comes no sooner than the server asked, not after the
    (here 10 ms) backoff; measured between the requests the server saw."""
    from email.utils import formatdate

    # An HTTP date has whole seconds: three seconds ahead is at least two ahead when it is made, and
    # still ahead when the first request arrives even if building the client takes a second.
    date = int(time.time()) + 3
    after = "1" if form == "seconds" else formatdate(date, usegmt=True)
    fake.script = [(429, FakeGemini.error(429, "RESOURCE_EXHAUSTED"), {"Retry-After": after}),
                   (200, FakeGemini.ok("scooping mortar"))]
    lab = GeminiLabeller(LabelConfig(base_url=fake.url, backoff_s=0.01, concurrency=1), "k")
    rec = lab(_examples(1)[0])
    assert rec["status"] == "ok" and rec["label"] == "scooping mortar"
    assert len(fake.requests) == 2
    if form == "seconds":
        assert fake.requests[1]["at"] - fake.requests[0]["at"] >= 0.95
    else:  # not before the date the server named (the client's own 10 ms backoff would be far sooner)
        assert fake.requests[0]["wall"] < date <= fake.requests[1]["wall"] + 0.01


def test_errors_are_recorded_per_cluster_not_fatal(fake: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GEMINI_API_KEY", "bad")
    fake.script = [(403, FakeGemini.error(403, "PERMISSION_DENIED"))]
    cfg = LabelConfig(base_url=fake.url, backoff_s=0.01, concurrency=1, max_retries=1)
    tbl = label_clusters(OutputStore(tmp_path), _examples(2), cfg).to_pylist()
    assert tbl[0]["status"] == "error" and "403" in tbl[0]["error"] and "GEMINI_API_KEY" in tbl[0]["error"]
    assert tbl[1]["status"] == "ok"  # the other cluster still got its name
    # The failed cluster is retried on the next run; the good one comes from the cache.
    again = label_clusters(OutputStore(tmp_path), _examples(2), cfg).to_pylist()
    assert [r["status"] for r in again] == ["ok", "cached"]


def test_budget_is_never_exceeded_and_a_rerun_names_the_rest(fake: FakeGemini, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from handclust.cost import GEMINI_USD_PER_MTOK
    from handclust.reporting.labelling import labels_spend, labels_summary

    monkeypatch.setenv("GEMINI_API_KEY", "k")
    cfg = LabelConfig(base_url=fake.url, backoff_s=0.01, max_requests=2)
    tbl = label_clusters(OutputStore(tmp_path), _examples(4), cfg)
    rows = tbl.to_pylist()
    assert len(fake.requests) == 2
    assert sorted(r["status"] for r in rows) == ["budget", "budget", "ok", "ok"]
    stopped = [r for r in rows if r["status"] == "budget"]
    assert all("budget reached: 2 requests" in r["error"] and "labels.max_requests" in r["error"] and r["label"] is None for r in stopped)
    # The spend as the API's usage metadata counted it: 1000 tokens in, 30 answer + 70 thinking out, per request.
    spend = labels_spend(tbl, cfg)
    i, o = GEMINI_USD_PER_MTOK[cfg.model]
    assert (spend["requests"], spend["input_tokens"], spend["output_tokens"]) == (2, 2000, 200)
    assert spend["usd"] == pytest.approx((2000 * i + 200 * o) / 1e6) and spend["max_requests"] == 2
    assert labels_summary(tbl)["budget_stopped"] == 2
    # A bigger budget names the other two; the two named are reused from the cache, not paid again.
    again = label_clusters(OutputStore(tmp_path), _examples(4), cfg.model_copy(update={"max_requests": 10})).to_pylist()
    assert len(fake.requests) == 4 and sorted(r["status"] for r in again) == ["cached", "cached", "ok", "ok"]
    assert sum(r["requests"] for r in again) == 2
    # A money limit too small for one request's worst case: no request at all.
    n = len(fake.requests)
    broke = label_clusters(OutputStore(tmp_path / "b"), _examples(1), LabelConfig(base_url=fake.url, max_cost_usd=1e-6)).to_pylist()
    assert len(fake.requests) == n and broke[0]["status"] == "budget" and "max_cost_usd" in broke[0]["error"]


def test_no_key_skips_with_a_clear_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    for k in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(k, raising=False)
    tbl = label_clusters(OutputStore(tmp_path), _examples(1), LabelConfig()).to_pylist()
    assert tbl[0]["status"] == "skipped" and "GEMINI_API_KEY" in tbl[0]["error"]


def test_discover_names_activities_end_to_end(fake: FakeGemini, footage_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import pandas as pd

    from handclust import discover

    monkeypatch.setenv("GEMINI_API_KEY", "k")
    clips = sorted(footage_dir.glob("*.mp4"))[:2]
    res = discover(clips, out=tmp_path / "out", progress=False,
                   overrides=["runner=local", f"labels.base_url={fake.url}", "labels.backoff_s=0.01", "labels.n_segments=2"])
    labels = pd.read_parquet(tmp_path / "out" / "labels.parquet")
    k = res.summary["activities"]
    assert k >= 1 and len(labels) == k and (labels.status == "ok").all()
    assert len(fake.requests) == k
    for req in fake.requests:  # 2 typical segments x 2 keyframes each, re-decoded from the clips
        assert sum("inlineData" in p for p in req["body"]["contents"][0]["parts"]) == 4
    assert set(res.summary["activity_names"].values()) == {"laying bricks"}
    # run.json: the labelling spend beside the measured compute and the estimate for the same footage hours.
    cost = json.loads((tmp_path / "out" / "run.json").read_text())["cost"]
    assert cost["labelling"]["requests"] == k and cost["labelling"]["usd"] > 0 and cost["labelling"]["input_tokens"] == 1000 * k
    m, e = cost["measured"], cost["estimated"]
    assert m["wall_s"] > 0 and m["node_hours"] > 0 and m["cpu_hours"] > 0 and m["footage_hours"] > 0
    assert e["node_hours"] > 0 and e["wall_s"] > 0 and e["node_type"] == "local" and cost["measured_over_estimated_wall"] > 0


def test_cluster_whose_keyframes_cannot_be_decoded_fails_alone(fake: FakeGemini, short_clip: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    moved = ClusterExamples(0, ["s0"], [], ((str(tmp_path / "moved.mp4"), 0.0, 3.0),))
    here = ClusterExamples(1, ["s1"], [], ((str(short_clip), 1.0, 4.0),))
    rows = label_clusters(OutputStore(tmp_path / "out"), [moved, here], LabelConfig(base_url=fake.url, backoff_s=0.01)).to_pylist()
    assert rows[0]["status"] == "error" and "moved.mp4" in rows[0]["error"] and "no keyframe could be decoded" in rows[0]["error"]
    assert rows[1]["status"] == "ok" and len(fake.requests) == 1  # decoded only for the cluster that could be


@pytest.mark.ray
def test_ray_runner_names_each_activity_in_a_ray_task(fake: FakeGemini, footage_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """On a cluster the driver may not see the footage: keyframes are decoded in the task that names the
    activity, and the report's gallery and reel excerpts in Ray tasks too."""
    import shutil
    import tempfile

    import pandas as pd

    import handclust.io.video
    from handclust import discover

    monkeypatch.setenv("GEMINI_API_KEY", "k")
    ray_tmp = tempfile.mkdtemp(prefix="hclab")  # short: Ray's socket paths must fit in 107 bytes
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)

    def not_on_the_driver(*args, **kwargs):
        raise AssertionError("keyframes decoded on the driver")

    monkeypatch.setattr(handclust.io.video, "read_range", not_on_the_driver)  # this process only, not Ray workers
    import ray

    starts = []
    real_init = ray.init

    def counted_init(*args, **kwargs):
        starts.append(kwargs.get("address"))
        return real_init(*args, **kwargs)

    monkeypatch.setattr(ray, "init", counted_init)
    clips = sorted(footage_dir.glob("*.mp4"))[:2]
    try:
        res = discover(clips, out=tmp_path / "out", progress=False, overrides=[
            "runner=ray", "ray.num_cpus=2", "ray.object_store_memory_mb=300", "pose.enabled=false",
            "evaluation.ablations=false", f"labels.base_url={fake.url}", "labels.backoff_s=0.01", "labels.n_segments=2",
            "labels.concurrency=2"])
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    # One local instance for the whole run (clips, labelling, report excerpts), shut down when it ends.
    assert starts == ["local"] and not ray.is_initialized()
    labels = pd.read_parquet(tmp_path / "out" / "labels.parquet")
    k = res.summary["activities"]
    assert k >= 1 and len(labels) == k and (labels.status == "ok").all(), labels.error.tolist()
    assert len(fake.requests) == k and res.summary["labels"]["ran_on"] == "ray tasks"
    # One budget actor for every task: the spend is summed in run.json beside the Ray cluster's measured compute.
    cost = json.loads((tmp_path / "out" / "run.json").read_text())["cost"]
    assert cost["labelling"]["requests"] == k and cost["labelling"]["output_tokens"] == 100 * k
    assert cost["measured"]["where"] == "ray cluster" and cost["measured"]["cpus"] == 2 and cost["measured"]["cpu_hours"] > 0
    for req in fake.requests:
        assert sum("inlineData" in p for p in req["body"]["contents"][0]["parts"]) == 4
    report = json.loads((tmp_path / "out" / "run.json").read_text())["report"]
    assert report["status"] == "ok" and report["problems"] == [], report  # no excerpt decoded on the driver
    assert report["reel_s"] > 0
    assert (tmp_path / "out" / "report" / "index.html").read_text().count("data:image/jpeg") >= 2 * k


def test_typical_segments_membership_centre_then_one_per_clip():
    """The one rule the labeller and the report's galleries / reel use (handclust.reporting.labelling.typical_segments)."""
    import pyarrow as pa

    from handclust.reporting.labelling import labels_summary, typical_segments

    labels = np.array([0, 0, 0, 0, 1, 1, -1], dtype=np.int32)
    probs = np.array([1.0, 1.0, 0.5, 1.0, 0.2, 0.9, 1.0])
    points = np.array([[0, 0], [0, 0.1], [0, 0], [5, 5], [0, 0], [0, 0], [0, 0]])  # row 3 is far from its cluster's centre
    clips = np.array(["a", "a", "b", "c", "a", "a", "a"])
    by_score = typical_segments(labels, probs, points, 3)
    assert set(by_score) == {0, 1}  # noise has no examples
    assert by_score[0].tolist() == [0, 1, 2] and by_score[1].tolist() == [5, 4]
    # Another clip before a second segment of clip "a", even a far one: examples show the activity, not one clip.
    assert typical_segments(labels, probs, points, 3, clip_ids=clips)[0].tolist() == [0, 2, 3]
    assert typical_segments(labels, probs, np.zeros((7, 0)), 4)[0].tolist() == [0, 1, 3, 2]  # no points: membership alone
    # The labels summary run.json and the report show; a labels.parquet written without an error column still counts.
    tbl = pa.table({"cluster": [0, 1, 2, 3], "status": ["ok", "cached", "error", "skipped"], "error": [None, None, "HTTP 500", None]})
    assert labels_summary(tbl) == {"labelled": 2, "failed": 1, "skipped": 1, "errors": ["HTTP 500"]}
    assert labels_summary(tbl.drop(["error"]))["errors"] == []
