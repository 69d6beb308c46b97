"""Learned encoders (DINOv2, V-JEPA-2, OWLv2) on CPU with tiny random checkpoints, no downloads.

The checkpoints are built from configs, saved with ``save_pretrained`` and loaded back through the
same path a user's ``hf download`` directory takes (``from_pretrained(local_dir)`` plus the processor
settings file next to the weights). Outputs of random weights mean nothing; what is tested is the
plumbing a user relies on: shapes, dtypes, unit norms, determinism, batching invariance, agreement
with transformers' own processor and forward pass, errors that say what to do, and the columns and
records an end-to-end run writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may touch the network

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
CLIP_MEAN_STD = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random DINOv2, V-JEPA-2 and OWLv2 checkpoints (+ processor settings, CLIP tokenizer) on disk."""
    import torch
    from transformers import (
        CLIPTokenizer,
        Dinov2Config,
        Dinov2Model,
        Owlv2Config,
        Owlv2ForObjectDetection,
        VJEPA2Config,
        VJEPA2Model,
    )
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)

    dino = root / "dinov2"
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             patch_size=14, image_size=28)).save_pretrained(dino)
    (dino / "preprocessor_config.json").write_text(json.dumps({  # the hub file's keys, smaller sizes
        "image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 32}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": 28, "width": 28}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, "do_convert_rgb": True, **IMAGENET}))

    vj = root / "vjepa2"
    VJEPA2Model(VJEPA2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2.0, crop_size=32,
                             patch_size=16, tubelet_size=2, frames_per_clip=8, pred_hidden_size=16,
                             pred_num_hidden_layers=1, pred_num_attention_heads=2, num_pooler_layers=1)).save_pretrained(vj)
    (vj / "video_preprocessor_config.json").write_text(json.dumps({
        "video_processor_type": "VJEPA2VideoProcessor", "crop_size": 32, "do_center_crop": True, "do_resize": True,
        "size": {"shortest_edge": 36}, "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, **IMAGENET}))

    owl = root / "owlv2"
    # A byte-level CLIP BPE vocabulary with no merges: every character is a token; enough for prompts.
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(owl)
    cfg = Owlv2Config(
        text_config={"vocab_size": len(vocab), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": vocab["<|startoftext|>"],
                     "eos_token_id": vocab["<|endoftext|>"], "pad_token_id": vocab["<|endoftext|>"]},
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 64, "patch_size": 16},
        projection_dim=32)
    model = Owlv2ForObjectDetection(cfg)
    with torch.no_grad():  # random heads saturate every score at 1.0; shrink them so scores vary
        model.class_head.logit_shift.weight.mul_(0.02)
        model.class_head.logit_scale.weight.mul_(0.02)
    model.save_pretrained(owl)
    (owl / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Owlv2ImageProcessor", "do_resize": True, "size": {"height": 64, "width": 64},
        "resample": 2, "do_pad": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, **CLIP_MEAN_STD}))
    return {"dinov2": dino, "vjepa2": vj, "owlv2": owl}


def encoder_overrides(m: dict[str, Path]) -> list[str]:
    return [
        "scene.encoder=dinov2", f"scene.model={m['dinov2']}",
        "video.enabled=true", f"video.model={m['vjepa2']}", "video.frames_per_window=4", "video.fps=2",
        "tools.enabled=true", f"tools.model={m['owlv2']}", "tools.fps=1",
    ]


@pytest.fixture(scope="session")
def enc_cfg(tiny_models: dict[str, Path]):
    from handclust.config import load_config

    return load_config(None, encoder_overrides(tiny_models))


@pytest.fixture(scope="session")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (16, 90, 160, 3), dtype=np.uint8)


def test_dinov2_scene_embedding_unit_vectors_deterministic_and_batch_invariant(enc_cfg, frames: np.ndarray):
    from handclust.modalities.encoders.dinov2 import DinoFrameEncoder

    big = DinoFrameEncoder(enc_cfg.scene.model_copy(update={"batch_size": 16}))
    one = DinoFrameEncoder(enc_cfg.scene.model_copy(update={"batch_size": 1}))
    out = big({"frame": frames, "frame_idx": np.arange(len(frames))})
    emb = out["scene_embedding"]
    assert emb.shape == (16, 64) and emb.dtype == np.float32  # cls + mean of hidden 32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(big.embed(frames), emb)
    np.testing.assert_allclose(one.embed(frames), emb, atol=1e-5)
    assert big.info() == {"device": "cpu", "dtype": "float32", "dim": 64, "batch_size": 16}
    assert not np.allclose(emb[0], emb[1])
    # A runner batch mixing clips of two sizes arrives as a ragged object array.
    small = frames[:3, :60, :100]
    ragged = np.empty(5, dtype=object)
    ragged[:] = [frames[0], small[0], frames[1], small[1], small[2]]
    mixed = big.embed(ragged)
    np.testing.assert_allclose(mixed[[0, 2]], emb[:2], atol=1e-5)
    np.testing.assert_allclose(mixed[[1, 3, 4]], big.embed(small), atol=1e-5)
    cls_only = DinoFrameEncoder(enc_cfg.scene.model_copy(update={"pooling": "cls"})).embed(frames[:2])
    assert cls_only.shape == (2, 32)
    np.testing.assert_allclose(cls_only, emb[:2, :32] * np.sqrt(2), atol=1e-5)


def test_dinov2_preprocessing_matches_the_checkpoints_own_processor(enc_cfg, tiny_models, frames: np.ndarray):
    """Same resize/crop/normalise as transformers' (PIL) processor, to within rounding of uint8 levels
    (bicubic overshoot on noise frames rounds differently in a few pixels)."""
    import torch
    from transformers import AutoImageProcessor

    from handclust.modalities.encoders.dinov2 import DinoFrameEncoder

    enc = DinoFrameEncoder(enc_cfg.scene)
    enc.setup()
    mine = enc.transform(torch.from_numpy(frames)).numpy()
    ref = AutoImageProcessor.from_pretrained(tiny_models["dinov2"])(images=list(frames), return_tensors="np")["pixel_values"]
    assert mine.shape == ref.shape == (16, 3, 28, 28)
    step = 1 / 255 / min(IMAGENET["image_std"])
    assert np.abs(mine - ref).max() <= 2 * step * 1.01
    assert np.abs(mine - ref).mean() < step / 4


def test_owlv2_tool_scores_match_the_full_model_and_skip_unscored_frames(enc_cfg, tiny_models, frames: np.ndarray):
    import torch
    from transformers import AutoImageProcessor, AutoModelForZeroShotObjectDetection, AutoTokenizer

    from handclust.modalities.encoders.owlv2 import OwlToolPresence

    stage = OwlToolPresence(enc_cfg.tools, sample_fps=5.0)
    assert stage.step == 5
    out = stage({"frame": frames[:12], "frame_idx": np.arange(3, 15)})
    scores = out["tool_scores"]
    n_prompts = len(enc_cfg.tools.prompts)
    assert scores.shape == (12, n_prompts) and scores.dtype == np.float32
    scored = np.arange(3, 15) % 5 == 0  # frames 5 and 10
    assert np.isnan(scores[~scored]).all() and np.isfinite(scores[scored]).all()
    assert ((scores[scored] > 0) & (scores[scored] < 1)).all() and scores[scored].std() > 0

    # Reference: transformers' processor + the full detection forward pass, max over boxes.
    proc = AutoImageProcessor.from_pretrained(tiny_models["owlv2"])
    pixels = proc(images=list(frames[:4]), return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(stage.transform(torch.from_numpy(frames[:4])).numpy(), pixels.numpy(), atol=1e-4)
    tok = AutoTokenizer.from_pretrained(tiny_models["owlv2"])(stage.texts, padding="max_length", max_length=16,
                                                             truncation=True, return_tensors="pt")
    model = AutoModelForZeroShotObjectDetection.from_pretrained(tiny_models["owlv2"]).eval()
    with torch.inference_mode():
        logits = model(input_ids=tok["input_ids"].repeat(4, 1), attention_mask=tok["attention_mask"].repeat(4, 1),
                       pixel_values=pixels).logits
    ref = torch.sigmoid(logits).amax(dim=1).numpy()
    np.testing.assert_allclose(stage.score(frames[:4]), ref, atol=1e-5)
    one = OwlToolPresence(enc_cfg.tools.model_copy(update={"batch_size": 1}), sample_fps=5.0)
    np.testing.assert_allclose(one.score(frames[:4]), stage.score(frames[:4]), atol=1e-5)


def test_vjepa2_windows_on_the_frames_the_run_decodes(enc_cfg, short_clip: Path):
    from handclust.io.footage import Clip
    from handclust.io.video import open_video
    from handclust.modalities.descriptors import SegmentFrames, describe_video
    from handclust.modalities.encoders.vjepa2 import VJEPAWindowEncoder, model_input, window_seconds
    from handclust.runtime.plan import concat_batches, frame_batches

    sample_fps = enc_cfg.decode.sample_fps  # 5 fps; video.fps=2: every 2nd sampled frame, 4 per window
    assert model_input(enc_cfg.video) == (36, 36)  # the tiny checkpoint: crop 32, resize 32 x 256/224
    assert window_seconds(enc_cfg.video, sample_fps) == pytest.approx(1.6)
    clip = Clip("c1", str(short_clip), short_clip.stat().st_size, "production")
    decoded = {}
    for backend in ("pyav", "decord"):
        src = open_video(short_clip, sample_fps, 64, 16, backend, model_input(enc_cfg.video))
        decoded[backend] = concat_batches(list(frame_batches(clip, enc_cfg, src)))
    rows = decoded["pyav"]
    n = len(rows["t"])
    # Decoded at the model's size from the source (not enlarged from the 64 px rows), by either backend.
    assert rows["video_px"].shape == (n, 36, 36, 3) and rows["frame"].shape[2] == 64
    assert decoded["decord"]["video_px"].shape == rows["video_px"].shape
    assert np.abs(decoded["decord"]["video_px"].astype(int) - rows["video_px"]).mean() < 8

    stage = VJEPAWindowEncoder(enc_cfg.video, sample_fps)  # batch_size 4: windows share forward passes
    assert stage.resources.batch_size == 4 * 8
    out = stage(rows)
    emb = out["video_emb"]
    assert "video_px" not in out and emb.shape == (n, 32) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    window = rows["frame_idx"] // 8
    assert all(np.ptp(emb[window == w], axis=0).max() == 0 for w in np.unique(window))  # one vector per window
    # Window 1 is frames 8, 10, 12, 14 of the decoded rows.
    np.testing.assert_allclose(emb[8], stage.embed_windows(rows["video_px"][[8, 10, 12, 14]][None])[0], atol=1e-5)
    one = VJEPAWindowEncoder(enc_cfg.video.model_copy(update={"batch_size": 1}), sample_fps)
    np.testing.assert_allclose(one(rows)["video_emb"], emb, atol=1e-5)
    # Batches that cut no window give the same rows; a cut window is embedded per part.
    parts = [stage({k: v[lo:hi] for k, v in rows.items()}) for lo, hi in ((0, 16), (16, n))]
    np.testing.assert_allclose(np.concatenate([p["video_emb"] for p in parts]), emb, atol=1e-5)

    # A segment's vector: its rows' window vectors, each window weighted by its rows in the segment.
    seg = SegmentFrames({**rows, "video_emb": emb}, 4, 16, sample_fps, enc_cfg.descriptor)
    mean = emb[4:16].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(describe_video(seg).vector, mean / np.linalg.norm(mean), atol=1e-6)
    assert describe_video(SegmentFrames(dict(rows), 0, 4, sample_fps, enc_cfg.descriptor)) is None
    assert stage.info()["dim"] == 32 and stage.info()["window_s"] == pytest.approx(1.6)


def test_removed_video_keys_name_what_replaced_them():
    from handclust.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"video\.max_windows' was removed: .*no second decode"):
        load_config(None, ["video.max_windows=8"])
    with pytest.raises(ConfigError, match=r"video\.fps \(8\.0\) must not exceed decode\.sample_fps \(5\.0\)"):
        load_config(None, ["video.enabled=true", "video.fps=8"])


def test_missing_or_wrong_model_stops_with_the_key_and_the_fix(enc_cfg, tiny_models, tmp_path: Path):
    from handclust.config import load_config
    from handclust.modalities.encoders import ModelLoadError, check_models

    missing = tmp_path / "weights" / "dinov2-base"
    with pytest.raises(ModelLoadError) as err:
        check_models(load_config(None, ["scene.encoder=dinov2", f"scene.model={missing}"]))
    msg = str(err.value)
    assert "scene.model" in msg and str(missing) in msg and "does not exist" in msg
    assert "hf download facebook/dinov2-small --local-dir DIR" in msg and "set scene.model=DIR" in msg

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((tiny_models["vjepa2"] / "config.json").read_text())
    (empty / "video_preprocessor_config.json").write_text((tiny_models["vjepa2"] / "video_preprocessor_config.json").read_text())
    with pytest.raises(ModelLoadError, match=r"video\.model=.*holds no weights.*hf download facebook/vjepa2-vitl-fpc64-256"):
        check_models(load_config(None, ["video.enabled=true", f"video.model={empty}"]))

    with pytest.raises(ModelLoadError, match=r"tools\.model=.*is a 'dinov2' checkpoint"):
        check_models(load_config(None, ["tools.enabled=true", f"tools.model={tiny_models['dinov2']}"]))

    records = check_models(enc_cfg)
    assert set(records) == {"scene", "video", "tools", "pose"}
    assert records["scene"]["model"] == str(tiny_models["dinov2"]) and records["scene"]["device"] == "cpu"
    assert records["tools"]["prompts"][0] == "trowel"


def test_discover_stops_before_any_clip_work_when_a_model_is_missing(short_clip: Path, tmp_path: Path):
    from handclust import discover
    from handclust.modalities.encoders import ModelLoadError

    out = tmp_path / "run"
    with pytest.raises(ModelLoadError, match="video.model"):
        discover([short_clip], out=out, overrides=["video.enabled=true", f"video.model={tmp_path / 'nope'}"], progress=False)
    assert not (out / "status").exists() and not (out / "frames").exists()


def test_forced_device_that_is_missing_is_an_error():
    import torch

    from handclust.modalities.encoders.device import DeviceError, gpu_share, resolve_device

    assert gpu_share("cpu", 0.5) == 0.0 and gpu_share("cuda", 0.5) == 0.5
    assert resolve_device("cpu", "scene.device") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match=r"scene\.device=cuda .*set scene\.device=auto or scene\.device=cpu"):
            resolve_device("cuda", "scene.device")
        assert resolve_device("auto", "scene.device") in ("cpu", "mps")


def test_fingerprint_follows_encoder_settings_not_batch_sizes(tiny_models):
    from handclust.config import load_config
    from handclust.pipeline import feature_fingerprint

    base = feature_fingerprint(load_config())
    assert feature_fingerprint(load_config(None, ["video.model=other", "tools.prompts=[brick]"])) == base  # disabled: ignored
    dino = feature_fingerprint(load_config(None, ["scene.encoder=dinov2"]))
    assert dino != base
    assert feature_fingerprint(load_config(None, ["scene.encoder=dinov2", "scene.batch_size=7"])) == dino
    assert feature_fingerprint(load_config(None, ["scene.encoder=dinov2", "scene.model=facebook/dinov2-base"])) != dino
    assert feature_fingerprint(load_config(None, ["scene.encoder=dinov2", "scene.dtype=bfloat16"])) != dino
    assert feature_fingerprint(load_config(None, ["video.enabled=true"])) != base
    assert feature_fingerprint(load_config(None, ["tools.enabled=true"])) != base


@pytest.mark.slow
def test_importing_the_encoders_loads_no_torch():
    code = ("import sys, handclust.modalities.encoders, handclust.modalities.encoders.dinov2, handclust.modalities.encoders.vjepa2, handclust.modalities.encoders.owlv2\n"
            "import handclust.modalities.encoders.efficientnet\n"
            "from handclust.config import load_config\n"
            "from handclust.modalities.registry import frame_stages as registry_stages\n"
            "assert type(registry_stages(load_config(None, []))[0]).__name__ == 'EfficientNetFrameEncoder'  # the default\n"
            "from handclust.pipeline import frame_stages, segment_stages\n"
            "cfg = load_config(None, ['scene.encoder=dinov2', 'video.enabled=true', 'tools.enabled=true'])\n"
            "stages = frame_stages(cfg) + segment_stages(cfg)\n"
            "print([s.name for s in stages], ','.join(m for m in ('torch', 'transformers', 'mediapipe') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # Frame stages in modality-registry order (handclust/modalities/registry.py); V-JEPA-2 is one of them.
    assert out.stdout.strip() == "['scene', 'motion', 'video', 'tools', 'pose']", out.stdout


def test_discover_with_all_three_encoders(tiny_models, footage_dir: Path, tmp_path: Path):
    from handclust import discover, schema

    clips = sorted(footage_dir.glob("*.mp4"))[:2]
    out = tmp_path / "run"
    result = discover(clips, out=out, progress=False, overrides=[
        *encoder_overrides(tiny_models), "runner=local", "decode.width=160", "decode.sample_fps=5", "labels.enabled=false",
        "report.enabled=false", "evaluation.ablations=false", "cluster.map_method=pca",
        # Random tiny encoders on two short clips: a small fixed cluster size keeps k > 0 on any
        # machine's float rounding, so the per-activity tool lists below have clusters to describe.
        "cluster.min_cluster_size=3"])
    # result.segments holds what the driver reads after clustering (no descriptors, issue 22): the stored ones.
    from handclust.io.storage import OutputStore

    seg = OutputStore(out).read_dataset("segments", schema.SEGMENTS)
    assert seg.num_rows == result.segments.num_rows > 0
    assert result.summary["activities"] > 0, json.dumps(result.summary, default=str)
    n_prompts = 16  # the default masonry prompts
    assert schema.vectors(seg, "desc_video").shape == (seg.num_rows, 32)
    assert schema.vectors(seg, "desc_tools").shape == (seg.num_rows, n_prompts)
    assert schema.vectors(seg, "desc_scene").shape == (seg.num_rows, 64)
    frames = result.frames()
    scores = schema.vectors(frames, "tool_scores")
    idx = np.asarray(frames.column("frame_idx"))
    assert np.isfinite(scores[idx % 5 == 0]).all() and np.isnan(scores[idx % 5 != 0]).all()
    for part in (out / "segments").glob("*.parquet"):
        assert pq.read_schema(part).equals(schema.SEGMENTS, check_metadata=False)

    run = json.loads((out / "run.json").read_text())
    enc = run["encoders"]
    assert enc["scene"]["encoder"] == "dinov2" and enc["scene"]["model"] == str(tiny_models["dinov2"])
    assert enc["video"]["encoder"] == "vjepa2" and enc["tools"]["encoder"] == "owlv2"
    # video.fps=2 of 5 sampled: every 2nd frame, 4 per window, so a window is 1.6 s of the decoded frames.
    assert enc["video"]["window_s"] == pytest.approx(1.6) and "no second decode" in enc["video"]["input"]
    assert all(enc[k]["device"] == "cpu" and enc[k]["dtype"] == "float32" for k in ("scene", "video", "tools"))
    assert {"video", "tools"} <= set(run["clustering"]["fusion_weights"])
    top = json.loads((out / "eval.json").read_text())["top_tools"]
    assert top and all(len(v) == 3 and v[0]["tool"] in run["config"]["tools"]["prompts"] for v in top.values())

    # Resume: the same encoder settings skip every clip (a changed one recomputes: see the fingerprint test).
    again = discover(clips, out=out, progress=False, overrides=[
        *encoder_overrides(tiny_models), "runner=local", "decode.width=160", "decode.sample_fps=5", "labels.enabled=false",
        "report.enabled=false", "evaluation.ablations=false", "cluster.map_method=pca"])
    assert again.segments.num_rows == seg.num_rows
    assert all(json.loads(p.read_text())["attempts"] == 1 for p in (out / "status").glob("*.json"))
    assert json.loads((out / "run.json").read_text())["feature_fingerprint"] == run["feature_fingerprint"]


@pytest.mark.ray
def test_ray_runner_gives_the_local_runners_encoder_columns(tiny_models, short_clip: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch):
    """The default runner: DINOv2 / V-JEPA-2 / OWLv2 as actor pools, same rows as local."""
    import shutil
    import tempfile

    import pandas as pd

    from handclust import discover

    ray_tmp = tempfile.mkdtemp(prefix="hcenc")  # short: Ray's socket paths must fit in 107 bytes
    monkeypatch.setenv("RAY_TMPDIR", ray_tmp)
    # decode.hwaccel=cuda as the GPU job config sets it: without a GPU both runners decode on CPU.
    common = [*encoder_overrides(tiny_models), "decode.width=160", "decode.sample_fps=5", "labels.enabled=false",
              "report.enabled=false", "evaluation.ablations=false", "cluster.map_method=pca", "decode.hwaccel=cuda"]
    try:
        discover([short_clip], out=tmp_path / "ray", progress=False, overrides=[
            *common, "runner=ray", "ray.num_cpus=2", "ray.actor_num_cpus=0.2", "ray.object_store_memory_mb=300"])
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    discover([short_clip], out=tmp_path / "local", progress=False, overrides=[*common, "runner=local"])
    for table, key in (("segments", "seg_idx"), ("frames", "frame_idx")):
        a = pd.read_parquet(tmp_path / "ray" / table).sort_values(key).reset_index(drop=True)
        b = pd.read_parquet(tmp_path / "local" / table).sort_values(key).reset_index(drop=True)
        assert len(a) == len(b) > 0
        for col in ("desc_video", "desc_tools", "desc_scene", "desc_pose") if table == "segments" else (
                "scene_embedding", "tool_scores", "hand_landmarks", "body_landmarks"):
            np.testing.assert_allclose(np.stack(a[col]), np.stack(b[col]), atol=1e-5, equal_nan=True, err_msg=col)
    run = json.loads((tmp_path / "ray" / "run.json").read_text())
    assert run["encoders"]["video"]["device"] == "cpu" and run["config"]["runner"] == "ray"
    for runner in ("ray", "local"):  # each clip's status says which decoder read it, and why
        st = json.loads(next((tmp_path / runner / "status").glob("*.json")).read_text())
        assert st["backend"] == "pyav" and "NVDEC first" in st["backend_reason"], st
