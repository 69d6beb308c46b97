"""OWLv2 open-vocabulary tool presence, per frame at a lower rate than the frame sampling.

For each scored frame and each prompt (``tools.prompts``, put into ``tools.prompt_template``),
the score is the highest detection probability over OWLv2's patch-wise boxes: "is there a trowel
anywhere in view, and how sure". Box regression and objectness are not computed. Prompt
embeddings are computed once in ``setup()``. Frames between scored ones get NaN rows, so the
``tool_scores`` column keeps one row per frame; ``desc_tools`` averages the scored ones.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from handclust.config import ToolsConfig
from handclust.modalities.encoders.base import HFEncoderStage
from handclust.stages import Batch, frame_step

KEY = "tools.model"
EXAMPLE_ID = "google/owlv2-base-patch16-ensemble"
MODEL_TYPES = ("owlv2",)
PROCESSOR_DEFAULTS: dict[str, Any] = {"size": {"height": 960, "width": 960}, "do_pad": True, "resample": 2,
                                      "image_mean": [0.48145466, 0.4578275, 0.40821073],
                                      "image_std": [0.26862954, 0.26130258, 0.27577711]}


class OwlToolPresence(HFEncoderStage):
    """Frame stage. Batch in: ``frame`` ``(n, H, W, 3)`` uint8, ``frame_idx``. Batch out: adds
    ``tool_scores`` ``(n, n_prompts)`` float32 in [0, 1], NaN on frames that are not scored.
    """

    name = "tools"
    section = "tools"
    key, example_id, model_types, kind = KEY, EXAMPLE_ID, MODEL_TYPES, "image"

    def __init__(self, cfg: ToolsConfig, sample_fps: float):
        self.step = frame_step(cfg.fps, sample_fps)  # tools.fps out of decode.sample_fps
        super().__init__(cfg, cfg.batch_size * self.step)
        self.dim = len(cfg.prompts)

    @property
    def texts(self) -> list[str]:
        return [self.cfg.prompt_template.format(p) for p in self.cfg.prompts]

    def check(self) -> dict[str, Any]:
        rec = self.checkpoint_record(tokenizer=True)
        return {"encoder": "owlv2", **rec, "prompts": list(self.cfg.prompts), "prompt_template": self.cfg.prompt_template,
                "fps": self.cfg.fps, "every_nth_frame": self.step}

    def load(self) -> Any:
        import torch
        from transformers import AutoModelForZeroShotObjectDetection

        from handclust.modalities.encoders.preprocess import Transform

        self.transform = Transform.from_processor(self.processor(), PROCESSOR_DEFAULTS, owlv2=True)
        tokenizer = self.load_tokenizer()
        model = self.load_checkpoint(AutoModelForZeroShotObjectDetection)
        max_len = int(model.config.text_config.max_position_embeddings)
        tok = tokenizer(self.texts, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            self.queries = model.owlv2.get_text_features(input_ids=tok["input_ids"].to(self.device),
                                                         attention_mask=tok["attention_mask"].to(self.device)).pooler_output
        return model

    def __call__(self, batch: Batch) -> Batch:
        self.setup()
        frames = batch["frame"]
        scored = np.asarray(batch["frame_idx"]) % self.step == 0
        scores = np.full((len(frames), len(self.cfg.prompts)), np.nan, np.float32)
        if scored.any():
            scores[scored] = self.score(frames[scored])
        out = dict(batch)
        out["tool_scores"] = scores
        return out

    def score(self, frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """``(n, H, W, 3)`` uint8 -> ``(n, n_prompts)``: each prompt's best box probability per frame."""
        return self.run_batches(frames, len(self.cfg.prompts))

    def forward(self, frames: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        import torch

        with torch.inference_mode():
            x = self.transform(torch.from_numpy(frames).to(self.device, non_blocking=True)).to(self.dtype)
            if self.device == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            feature_map = self.model.image_embedder(pixel_values=x)[0]
            b, h, w, d = feature_map.shape
            feats = feature_map.reshape(b, h * w, d)
            queries = self.queries.unsqueeze(0).expand(b, -1, -1)
            mask = torch.ones(queries.shape[:2], dtype=torch.bool, device=queries.device)
            logits = self.model.class_predictor(feats, queries, mask)[0]  # (b, patches, prompts)
            return torch.sigmoid(logits.float()).amax(dim=1).cpu().numpy().astype(np.float32)


def top_tools(desc_tools: npt.NDArray[np.floating], labels: npt.NDArray[np.integer], prompts: tuple[str, ...] | list[str],
              k: int) -> dict[int, list[dict[str, Any]]]:
    """Per cluster (label >= 0): the ``k`` prompts with the highest mean ``desc_tools`` score.

    Each entry also gives ``lift``: the cluster's mean over the mean of all segments, so a tool
    seen everywhere (a gloved hand) does not top every list unnoticed.
    """
    x = np.asarray(desc_tools, np.float64)
    out: dict[int, list[dict[str, Any]]] = {}
    if x.ndim != 2 or x.shape[1] != len(prompts) or len(x) == 0:
        return out
    overall = np.nanmean(x, axis=0)
    for c in np.unique(labels[labels >= 0]):
        mean = np.nanmean(x[labels == c], axis=0)
        order = np.argsort(-mean, kind="stable")[:k]
        out[int(c)] = [{"tool": prompts[j], "score": round(float(mean[j]), 4),
                        "lift": round(float(mean[j] / overall[j]), 3) if overall[j] > 0 else None} for j in order]
    return out
