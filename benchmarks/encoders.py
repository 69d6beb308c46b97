"""Learned-encoder throughput: DINOv2 frames/s, V-JEPA-2 windows/s, OWLv2 frames/s, per size and device.

Real-size architectures are built from their configs with random weights (no download: the cost of
a forward pass does not depend on the weights), saved next to the processor settings the hub
checkpoints ship, and loaded through the same stages a run uses, so preprocessing, batching and
(for V-JEPA-2) windowing the decoded rows are part of every number. Each number states
the device, batch size and dtype it was measured with. Writes benchmarks/results/encoders_<device>.json.

    python benchmarks/encoders.py                                  # CPU, small counts (a few minutes)
    python benchmarks/encoders.py --device cuda --frames 512 --windows 32 --sizes small base large
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
CLIP_MEAN_STD = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
DINO_SIZES = {  # facebook/dinov2-*: hidden, layers, heads
    "small": (384, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16), "giant": (1536, 40, 24)}
VJEPA_SIZES = {  # facebook/vjepa2-vit*-fpc64-256: hidden, layers, heads, mlp_ratio
    "vitl": (1024, 24, 16, 4.0), "vith": (1280, 32, 16, 4.0), "vitg": (1408, 40, 22, 48 / 11)}


def save_dinov2(root: Path, size: str) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    hidden, layers, heads = DINO_SIZES[size]
    d = root / f"dinov2-{size}"
    Dinov2Model(Dinov2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, mlp_ratio=4,
                             patch_size=14, image_size=518)).save_pretrained(d)
    (d / "preprocessor_config.json").write_text(json.dumps({  # as on the hub
        "image_processor_type": "BitImageProcessor", "do_resize": True, "size": {"shortest_edge": 256}, "resample": 3,
        "do_center_crop": True, "crop_size": {"height": 224, "width": 224}, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, **IMAGENET}))
    return d


def save_vjepa2(root: Path, size: str) -> Path:
    from transformers import VJEPA2Config, VJEPA2Model

    hidden, layers, heads, mlp = VJEPA_SIZES[size]
    d = root / f"vjepa2-{size}"
    VJEPA2Model(VJEPA2Config(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, mlp_ratio=mlp,
                             crop_size=256, frames_per_clip=64)).save_pretrained(d)
    (d / "video_preprocessor_config.json").write_text(json.dumps({
        "video_processor_type": "VJEPA2VideoProcessor", "crop_size": 256, "do_center_crop": True, "do_resize": True,
        "size": {"shortest_edge": 292}, "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255,
        "do_normalize": True, **IMAGENET}))
    return d


def save_owlv2(root: Path) -> Path:
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    d = root / "owlv2-base-patch16"
    chars = list(bytes_to_unicode().values())  # byte-level stand-in vocabulary: prompts cost one pass in setup()
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(d)
    cfg = Owlv2Config(  # google/owlv2-base-patch16-ensemble
        text_config={"vocab_size": 49408, "hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                     "num_attention_heads": 8, "max_position_embeddings": 16,
                     "bos_token_id": vocab["<|startoftext|>"], "eos_token_id": vocab["<|endoftext|>"]},
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12,
                       "image_size": 960, "patch_size": 16},
        projection_dim=512)
    Owlv2ForObjectDetection(cfg).save_pretrained(d)
    (d / "preprocessor_config.json").write_text(json.dumps({
        "image_processor_type": "Owlv2ImageProcessor", "do_resize": True, "size": {"height": 960, "width": 960},
        "resample": 2, "do_pad": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True, **CLIP_MEAN_STD}))
    return d


def window_s(cfg: Any) -> float:
    from handclust.modalities.encoders.vjepa2 import window_seconds

    return window_seconds(cfg.video, cfg.decode.sample_fps)


def timed(fn: Any, device: str) -> float:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "mps"])
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    ap.add_argument("--sizes", nargs="+", default=["small", "base"], help="DINOv2 sizes (small base large giant)")
    ap.add_argument("--video-sizes", nargs="+", default=["vitl"], help="V-JEPA-2 sizes (vitl vith vitg); none: skip")
    ap.add_argument("--frames", type=int, default=16, help="frames timed per DINOv2 size")
    ap.add_argument("--batch-size", type=int, default=8, help="DINOv2 frames per forward pass")
    ap.add_argument("--windows", type=int, default=1, help="V-JEPA-2 windows timed (16 decoded frames each, 3.2 s at 5 fps)")
    ap.add_argument("--video-batch-size", type=int, default=2)
    ap.add_argument("--owl-frames", type=int, default=2, help="frames timed for OWLv2 (0: skip)")
    ap.add_argument("--owl-batch-size", type=int, default=1)
    ap.add_argument("--frame-size", default="640x360", help="decoded frame size fed to the frame encoders")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    import torch
    import transformers

    from handclust.config import load_config
    from handclust.modalities.encoders.device import dtype_name, resolve_dtype
    from handclust.modalities.encoders.dinov2 import DinoFrameEncoder
    from handclust.modalities.encoders.owlv2 import OwlToolPresence
    from handclust.modalities.encoders.vjepa2 import VJEPAWindowEncoder, model_input

    load0 = os.getloadavg()[0]  # other work on the machine slows every number below; recorded with them
    dtype = dtype_name(resolve_dtype(args.dtype, args.device, "--dtype"))
    w, h = (int(v) for v in args.frame_size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="hc-enc-bench-"))
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (max(args.frames, args.owl_frames, 1), h, w, 3), dtype=np.uint8)
    results: list[dict[str, Any]] = []

    def record(**kw: Any) -> None:
        kw.update(device=args.device, dtype=dtype)
        results.append(kw)
        print(json.dumps(kw))

    try:
        for size in args.sizes:
            d = save_dinov2(work, size)
            cfg = load_config(None, ["scene.encoder=dinov2", f"scene.model={d}", f"scene.device={args.device}",
                                     f"scene.dtype={dtype}", f"scene.batch_size={args.batch_size}"])
            stage = DinoFrameEncoder(cfg.scene)
            stage.setup()
            stage.embed(frames[: args.batch_size])  # warm-up: allocator, kernels
            s = timed(lambda st=stage: st.embed(frames[: args.frames]), args.device)
            record(model=f"dinov2-{size}", stage="scene", unit="frames/s", value=round(args.frames / s, 3),
                   n=args.frames, seconds=round(s, 2), batch_size=args.batch_size, input=f"{w}x{h} uint8 -> 224x224",
                   params_m=round(sum(p.numel() for p in stage.model.parameters()) / 1e6, 1))
            shutil.rmtree(d)

        if args.video_sizes and args.video_sizes != ["none"] and args.windows > 0:
            for size in args.video_sizes:
                d = save_vjepa2(work, size)
                cfg = load_config(None, ["video.enabled=true", f"video.model={d}", f"video.device={args.device}",
                                         f"video.dtype={dtype}", f"video.batch_size={args.video_batch_size}"])
                stage = VJEPAWindowEncoder(cfg.video, cfg.decode.sample_fps)
                stage.setup()
                side = model_input(cfg.video)[1]
                # Rows as decoding gives them: each sampled frame also at the model's input size.
                n = args.windows * stage.span
                rows = {"clip_id": np.array(["bench"] * n, dtype=object), "frame_idx": np.arange(n, dtype=np.int32),
                        "video_px": rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)}
                stage.embed_windows(rows["video_px"][None, : cfg.video.frames_per_window])  # warm-up
                s = timed(lambda st=stage, b=rows: st(b), args.device)
                record(model=f"vjepa2-{size}-fpc64-256", stage="video", unit="windows/s", value=round(args.windows / s, 4),
                       n=args.windows, seconds=round(s, 2), batch_size=args.video_batch_size, windows=args.windows,
                       windows_per_s=round(args.windows / s, 4), window_s=window_s(cfg),
                       input=f"{cfg.video.frames_per_window} decoded frames of {side}x{side} per window (no second decode)",
                       params_m=round(sum(p.numel() for p in stage.model.parameters()) / 1e6, 1))
                shutil.rmtree(d)

        if args.owl_frames > 0:
            d = save_owlv2(work)
            cfg = load_config(None, ["tools.enabled=true", f"tools.model={d}", f"tools.device={args.device}",
                                     f"tools.dtype={dtype}", f"tools.batch_size={args.owl_batch_size}"])
            stage = OwlToolPresence(cfg.tools, sample_fps=cfg.decode.sample_fps)
            stage.setup()
            stage.score(frames[:1])  # warm-up
            s = timed(lambda st=stage: st.score(frames[: args.owl_frames]), args.device)
            record(model="owlv2-base-patch16", stage="tools", unit="frames/s", value=round(args.owl_frames / s, 4),
                   n=args.owl_frames, seconds=round(s, 2), batch_size=args.owl_batch_size, prompts=len(cfg.tools.prompts),
                   input=f"{w}x{h} uint8 -> padded 960x960",
                   params_m=round(sum(p.numel() for p in stage.model.parameters()) / 1e6, 1))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    gpu = torch.cuda.get_device_name(0) if args.device == "cuda" else None
    report = {
        "what": "learned-encoder throughput through the handclust stages (preprocessing included; V-JEPA-2 includes re-decoding)",
        "weights": "random, real-size architectures built from config (speed does not depend on weight values)",
        "device": args.device, "gpu": gpu, "dtype": dtype, "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(), "load_avg_1m_start_end": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "machine": platform.platform(), "processor": platform.processor(),
        "torch": torch.__version__, "transformers": transformers.__version__,
        "results": results,
    }
    out = args.out or Path(__file__).parent / "results" / f"encoders_{args.device}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
