"""The report a person reads: files, reel, escaping, the eval.json contract, and the page in a real browser."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from handclust.reporting import report as report_mod
from handclust.reporting.report import html as report_html
from handclust.reporting.report import write_report

HOSTILE_LABEL = "<script>alert(1)</script>"
HOSTILE_FILE = "05_prep_<img src=x onerror=alert(2)>.mp4"


def chromium_path() -> str | None:
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 clips of 30 s, the whole pipeline with the report at its end (PCA map: no UMAP JIT to wait for)."""
    from handclust import discover, make_sample_footage

    footage = make_sample_footage(tmp_path_factory.mktemp("footage"), n_clips=3, minutes=0.5, seed=11, fps=10.0, size=(320, 180))
    out = tmp_path_factory.mktemp("run")
    discover(footage, out=out, overrides={"cluster": {"map_method": "pca"}, "runner": "local", "scene": {"encoder": "histogram"}}, progress=False)
    return out


def _copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report"))
    return dst


@pytest.fixture(scope="module")
def hostile_run(small_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the run with every optional input present, and text from models and files out to break the page."""
    out = _copy_run(small_run, tmp_path_factory.mktemp("hostile") / "run")
    clusters = pd.read_parquet(out / "clusters.parquet")
    acts = sorted(c for c in clusters.cluster.unique() if c >= 0)
    assert acts, "the small run found no activity: the fixture footage or the clustering defaults changed"
    # The VLM answered with markup, for the first activity; the others stay unlabelled.
    pd.DataFrame({
        "cluster": np.asarray(acts, dtype=np.int32),
        "label": [HOSTILE_LABEL] + [None] * (len(acts) - 1),
        "description": ['tub & trowel "circles" <b>bold</b>'] + [None] * (len(acts) - 1),
        "status": ["ok"] + ["skipped"] * (len(acts) - 1),
    }).to_parquet(out / "labels.parquet")
    # A clip whose file name is markup (a legal Linux name); it must still decode.
    clips = pd.read_parquet(out / "clips.parquet")
    hostile = Path(clips.path.iloc[1]).with_name(HOSTILE_FILE)
    shutil.copy(clips.path.iloc[1], hostile)
    clips.loc[1, "path"] = str(hostile)
    clips.to_parquet(out / "clips.parquet")
    # Ablations as evaluation.py writes them: per-variant cluster of every segment.
    rng = np.random.default_rng(0)
    rows = [clusters.assign(variant="fusion (this run)")]
    for variant in ("motion only", "scene <only>"):
        c = clusters.cluster.to_numpy().copy()
        c[rng.random(len(c)) < 0.3] = -1
        rows.append(clusters.assign(variant=variant, cluster=c.astype(np.int32)))
    pd.concat(rows)[["segment_id", "clip_id", "variant", "cluster"]].to_parquet(out / "ablations.parquet")
    ev = json.loads((out / "eval.json").read_text())
    scores = {"per_segment": {"ari": 0.1, "nmi": 0.2, "v_measure": 0.2}, "duration_weighted": {"ari": 0.15, "nmi": 0.25, "v_measure": 0.25}}
    gt = {"ari": 0.5, "mof": 0.6, "f1@25": 0.4}
    ev["ablations"] = [
        {"name": "fusion (this run)", "modalities": ["scene", "motion", "ego", "rhythm"], "k": ev["k"], "noise_rate": ev["noise_rate"],
         "phase": ev["phase"], "cross_clip": ev["cross_clip"], "ground_truth": gt},
        {"name": "motion only", "modalities": ["motion"], "k": 2, "noise_rate": 0.3, "phase": scores,
         "cross_clip": {"entropy": 0.9, "multi_clip_share": 1.0}, "ground_truth": gt},
        {"name": "scene <only>", "modalities": ["scene"], "k": 5, "noise_rate": 0.3, "phase": {"note": "fewer than two phases"},
         "cross_clip": {"entropy": 0.1}},  # multi_clip_share missing: "not computed"
    ]
    ev["per_clip"] = [{"clip_id": r.clip_id, "path": r.path, "variant": v, "k": 2, "noise_rate": 0.25}
                      for v in ("fusion (this run)", "motion only") for r in clips.itertuples()]
    ev.setdefault("ground_truth", {}).update({"mof": 0.7, "f1@10": 0.6, "f1@25": 0.5, "f1@50": 0.3, "edit": 55.0})
    (out / "eval.json").write_text(json.dumps(ev))
    write_report(out, reel=True)
    return out


def test_discover_writes_report_and_reel(small_run: Path):
    html = (small_run / "report" / "index.html").read_text()
    assert (small_run / "report" / "reel.mp4").stat().st_size > 10_000
    assert "<img" in html and "data:image/png;base64," in html and "data:image/jpeg;base64," in html
    assert 'src="reel.mp4"' in html
    assert "http://" not in html and "https://" not in html  # self-contained: opens offline
    run = json.loads((small_run / "run.json").read_text())
    assert run["report"]["status"] == "ok", run["report"]
    assert run["summary"]["report"].endswith("report/index.html")
    assert run["config"]["report"] == {"enabled": True, "reel": True}
    # What the run cost, measured, beside the estimate for the same footage (run.json's cost block).
    assert run["cost"]["measured"]["node_hours"] > 0 and run["cost"]["estimated"]["node_hours"] > 0
    assert "CPU-h measured (this machine); estimated" in html


def test_reel_has_title_cards_then_footage(small_run: Path):
    import av

    plan = json.loads((small_run / "report" / "reel.json").read_text())
    k = json.loads((small_run / "eval.json").read_text())["k"]
    assert len(plan["chapters"]) == k >= 1
    with av.open(str(small_run / "report" / "reel.mp4")) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert stream.width % 2 == 0 and stream.height % 2 == 0
        duration = float(stream.duration * stream.time_base)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    expected = sum(ch["title_frames"] + sum(e["frames"] for e in ch["excerpts"]) for ch in plan["chapters"])
    # Per activity a 1.5 s card and up to three excerpts of <= 3 s at 10 fps.
    assert expected >= k * (plan["chapters"][0]["title_frames"] + 10)
    assert len(frames) == expected
    assert duration == pytest.approx(expected / plan["fps"], abs=0.3)
    # Chapter 1 opens on its title card (dark, with the activity's colour bar on the left), then real footage.
    card, footage = frames[0], frames[plan["chapters"][0]["title_frames"] + 2]
    assert card[:, 60:].mean() < 45
    colour = report_mod.colour_hex(plan["chapters"][0]["cluster"])
    want = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)])
    assert np.abs(card[10:-10, 2:9].reshape(-1, 3).mean(axis=0) - want).max() < 30
    assert footage[:-30].mean() > 60


def test_report_escapes_text_from_models_and_files(hostile_run: Path):
    html = (hostile_run / "report" / "index.html").read_text()
    assert HOSTILE_LABEL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script" not in html.lower()
    assert "<img src=x" not in html and "<b>bold</b>" not in html
    assert "05_prep_&lt;img src=x onerror=alert(2)&gt;.mp4" in html
    # The hostile file still decoded: its keyframes are in the galleries, no decode problem was recorded.
    assert json.loads((hostile_run / "run.json").read_text())["report"]["problems"] == []


def test_report_follows_the_eval_contract(hostile_run: Path):
    html = (hostile_run / "report" / "index.html").read_text()
    table = html[html.index('id="ablation-table"'):]
    table = table[: table.index("</table>")]
    assert table.count("fusion (this run)") == 1 and "motion only" in table and "scene &lt;only&gt;" in table
    assert table.count("not computed") >= 8  # note-only phase scores, missing multi_clip_share and truth scores
    assert "truth<br>MoF" in table
    per_clip = html[html.index('id="per-clip-table"'):]
    per_clip = per_clip[: per_clip.index("</table>")]
    assert per_clip.count("<tr>") == 1 + len(pd.read_parquet(hostile_run / "clips.parquet"))  # one row per clip, a column per variant
    assert "motion only" in per_clip and "2 (25.0 %)" in per_clip
    assert 'id="cross-clip-table"' in html
    gt = html[html.index('id="ground-truth-table"'):]
    assert "f1@25" in gt[: gt.index("</table>")]
    # One figure per clip, holding the fused strip and the two ablation strips.
    n_clips = len(pd.read_parquet(hostile_run / "clips.parquet"))
    assert html.count('class="clip timeline-strip"') == n_clips
    assert html.count('class="clip clip-signals"') == n_clips


def test_report_without_optional_inputs(small_run: Path, tmp_path: Path):
    out = _copy_run(small_run, tmp_path / "run")
    for name in ("eval.json", "labels.parquet", "embedding_2d.parquet", "run.json"):
        (out / name).unlink()
    path = write_report(out, reel=False)
    html = Path(path).read_text()
    assert "eval.json: not computed" in html
    assert "2-D map: not computed" in html
    assert "Reel: not computed" in html and 'src="reel.mp4"' not in html
    assert not (out / "report" / "reel.mp4").exists()
    assert "activity 0" in html  # unlabelled activities keep their number


def test_large_runs_cap_the_per_clip_sections(small_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    out = _copy_run(small_run, tmp_path / "run")
    monkeypatch.setattr(report_html, "MAX_CLIPS", 2)
    html = Path(write_report(out, reel=False)).read_text()
    assert html.count('class="clip timeline-strip"') == 2
    more = html[html.index('id="more-clips"'):]
    assert more[: more.index("</table>")].count("<tr>") == 1 + 1  # header + the one clip not drawn


def test_report_failure_does_not_lose_the_run(small_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              caplog: pytest.LogCaptureFixture):
    from handclust.io.storage import OutputStore
    from handclust.pipeline import RunResult, write_run_report
    from handclust.progress import Progress

    out = _copy_run(small_run, tmp_path / "run")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_mod, "write_report", broken)
    result = RunResult(str(out), None, None, None, {})  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING):
        write_run_report(OutputStore(out), result, reel=True, prog=Progress(False))
    run = json.loads((out / "run.json").read_text())
    assert run["report"] == {"status": "error", "error": "RuntimeError: disk full"}
    assert "clustering" in run and "summary" in run  # the run's record is intact
    assert result.summary["report_error"] == "RuntimeError: disk full"
    assert any("handclust report" in r.getMessage() for r in caplog.records)


def test_cli_report(small_run: Path, tmp_path: Path):
    from click.testing import CliRunner

    from handclust.cli import cli

    out = _copy_run(small_run, tmp_path / "run")
    res = CliRunner().invoke(cli, ["report", str(out), "--no-reel"])
    assert res.exit_code == 0, res.output
    assert "report/index.html" in res.output and (out / "report" / "index.html").exists()
    res = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert res.exit_code == 2 and "clips.parquet not found" in res.output


@pytest.mark.skipif(chromium_path() is None, reason="chromium is not installed (apt-get install -y chromium; .ci/run does it)")
def test_report_in_a_browser(hostile_run: Path):
    """Headless Chromium opens the file from disk: no console or page errors, every image decodes, key parts present."""
    from playwright.sync_api import sync_playwright

    index = hostile_run / "report" / "index.html"
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
            page.goto(index.as_uri(), wait_until="load")
            page.screenshot(path=str(hostile_run / "report" / "screenshot.png"), full_page=True)
            counts = page.evaluate("""() => ({
                summary: document.querySelectorAll('#summary table tr').length,
                ablation_rows: document.querySelectorAll('#ablation-table tbody tr').length,
                strips: document.querySelectorAll('.timeline-strip img').length,
                map: document.querySelectorAll('img#map-2d').length,
                gallery_imgs: document.querySelectorAll('.gallery img').length,
                galleries: document.querySelectorAll('.gallery').length,
                broken: [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
                video_error: document.querySelector('video') ? document.querySelector('video').error : 'no video',
                title: document.title,
            })""")
        finally:
            browser.close()
    assert problems == []
    assert counts["broken"] == []
    assert counts["video_error"] is None
    assert counts["summary"] >= 5
    assert counts["ablation_rows"] == 3
    assert counts["strips"] == len(pd.read_parquet(hostile_run / "clips.parquet"))
    assert counts["map"] == 1
    k = json.loads((hostile_run / "eval.json").read_text())["k"]
    assert counts["galleries"] == k and counts["gallery_imgs"] >= k * 3
    assert (hostile_run / "report" / "screenshot.png").stat().st_size > 50_000


def test_ablation_clusters_take_the_colour_of_the_fused_activity_they_match():
    """A variant that finds the same activities under other ids is drawn in the fused colours; extras get new ones."""
    seg = pd.DataFrame({"segment_id": list("abcdef"), "t_start": [0, 5, 10, 15, 20, 25], "t_end": [5, 10, 15, 20, 25, 30],
                        "cluster": [0, 0, 1, 1, 2, -1]})
    ab = pd.DataFrame({"segment_id": list("abcdef") * 2, "variant": ["fusion (this run)"] * 6 + ["motion only"] * 6,
                       "cluster": [0, 0, 1, 1, 2, -1] + [7, 7, 3, 3, -1, 5]})
    shown = report_mod.align_to_fused(ab, seg)
    assert shown[shown.variant == "motion only"].shown.tolist() == [0, 0, 1, 1, -1, 3]  # 7->0, 3->1, noise, 5 unmatched -> new id 3
    assert shown[shown.variant == "fusion (this run)"].shown.tolist() == [0, 0, 1, 1, 2, -1]


def test_moved_footage_is_one_problem_not_a_failure(small_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    """Keyframes need the clips: a clip that moved leaves its keyframes out, says so once, and the rest is drawn."""
    out = _copy_run(small_run, tmp_path / "run")
    clips = pd.read_parquet(out / "clips.parquet")
    clips.loc[0, "path"] = str(tmp_path / "gone" / "01_production_masonry.mp4")
    clips.to_parquet(out / "clips.parquet")
    with caplog.at_level(logging.WARNING):
        html = Path(write_report(out, reel=True)).read_text()
    report = json.loads((out / "run.json").read_text())["report"]
    assert report["status"] == "partial" and report["problems_total"] == 1
    assert "no longer at the path" in report["problems"][0]
    assert "problem(s) while writing this report" in html
    plan = json.loads((out / "report" / "reel.json").read_text())
    excerpts = [e["clip_id"] for ch in plan["chapters"] for e in ch["excerpts"]]
    assert excerpts and clips.clip_id[0] not in excerpts
    assert html.count('class="clip timeline-strip"') == len(clips)  # tables and plots need no video


def test_one_colour_rule_for_report_and_timelines_and_no_repeats():
    from handclust.colours import activity_colour
    from handclust.reporting import timeline

    # timelines/ and the report drew activities >= 10 differently, and timelines/ gave 10 the colour of 5, 20 that of 0.
    assert timeline.activity_colour is activity_colour and report_mod.colour_hex is activity_colour
    colours = [activity_colour(c) for c in range(60)]
    assert len(set(colours)) == 60 and "#000000" not in colours
    assert activity_colour(-1) == "#000000"  # noise
    assert colours[:10] == ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
