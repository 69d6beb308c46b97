"""Run configuration: frozen, validated once, YAML on disk.

Precedence is command line (``--set key=value``) > YAML file > defaults. The fully resolved
config is written into every run's ``run.json`` so a run can be reproduced from its outputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from handclust.errors import ConfigError as ConfigError  # defined with every error in handclust/errors.py


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DecodeConfig(_Frozen):
    sample_fps: float = Field(5.0, gt=0, le=60, description="frames sampled per second of video")
    width: int = Field(320, ge=32, le=3840, description="frames are resized to this width on decode")
    backend: Literal["auto", "decord", "pyav", "nvdec"] = Field("auto", description=(
        "auto: PyAV, then decord if PyAV decodes no frame; decord: decord first, PyAV as its fallback; pyav: PyAV first, "
        "decord as its fallback; nvdec: the GPU's video engine first, as decode.hwaccel=cuda (CPU where it cannot)"))
    hwaccel: Literal["none", "cuda"] = Field("none", description=(
        "cuda: decode on the GPU's video engine (NVDEC, FFmpeg's cuda device in PyAV) where the process sees a GPU; a clip "
        "it cannot take (no GPU on that node, a stream NVDEC does not support) is decoded on CPU, and its status says why"))
    chunk_frames: int = Field(64, ge=2, description="sampled frames per chunk (memory bound)")
    prefetch_chunks: int = Field(2, ge=0, le=16, description=(
        "chunks a decode thread may run ahead of the frame stages (0: decode in the same thread); overlaps decoding "
        "with the features, memory grows by this many chunks; does not change any output"))


class FlowConfig(_Frozen):
    preset: Literal["ultrafast", "fast", "medium"] = Field("fast", description="OpenCV DIS optical-flow preset (speed against accuracy)")
    grid: int = Field(4, ge=1, le=16, description="spatial grid of mean flow is grid x grid")
    direction_bins: int = Field(8, ge=4, le=36, description="bins of the flow-direction histogram")
    ransac_threshold_px: float = Field(1.0, gt=0, description="inlier threshold (px) of the ego-motion (RANSAC similarity) fit")
    max_points: int = Field(400, ge=16, description="flow vectors sampled for the ego-motion fit")


EncoderDevice = Literal["auto", "cuda", "mps", "cpu"]
EncoderDtype = Literal["auto", "float32", "bfloat16", "float16"]
_DEVICE_HELP = "auto: cuda, then mps, then cpu; a named device that is missing is an error"
_DTYPE_HELP = "auto: bfloat16 on cuda GPUs that have it (compute capability >= 8.0), float16 on older ones (T4, V100), float32 elsewhere"
_MODEL_HELP = "hub id or a local directory made by `hf download ID --local-dir DIR` (see docs/user-guide.md, Learned encoders)"


class SceneConfig(_Frozen):
    encoder: Literal["auto", "histogram", "efficientnet", "dinov2"] = Field(
        "auto", description="auto (default): efficientnet when its packages are installed (the [encoders] extra), else "
        "histogram, and run.json says which ran and why; histogram: model-free; efficientnet: ImageNet EfficientNet-Lite0, "
        "weights from a pip package, made for CPUs; dinov2: learned, the GPU choice, needs weights (docs/encoders.md)")
    fps: float | None = Field(
        None, gt=0, le=60, description="frames per second the scene encoder embeds (every round(decode.sample_fps / fps)-th "
        "sampled frame; the frames between hold its vector); null: 1 for efficientnet (~23 ms a frame on one core), "
        "every sampled frame for histogram and dinov2; below 1 / segment.window_s one vector spans the appearance "
        "detector's half-window and boundaries suffer (docs/encoders.md)")
    pyramid_levels: int = Field(2, ge=1, le=4)
    color_bins: int = Field(6, ge=2, le=32)
    orientation_bins: int = Field(8, ge=4, le=36)
    model: str = Field("facebook/dinov2-small", description=f"dinov2 (small|base|large): {_MODEL_HELP}")
    revision: str | None = Field(None, description="hub branch, tag or commit of scene.model")
    pooling: Literal["cls+mean", "cls", "mean"] = Field("cls+mean", description="dinov2 tokens kept per frame")
    device: EncoderDevice = Field("auto", description=_DEVICE_HELP)
    dtype: EncoderDtype = Field("auto", description=_DTYPE_HELP)
    batch_size: int = Field(32, ge=1, description="frames per forward pass")
    num_gpus: float = Field(0.5, gt=0, le=1, description="GPU share per Ray actor when on cuda")


class VideoConfig(_Frozen):
    """V-JEPA-2 embedding per window of consecutive sampled frames, on the frames the run decodes
    (at the model's input size); a segment's vector is the mean over its frames' windows."""

    enabled: bool = Field(False, description="V-JEPA-2 video embedding (desc_video); needs the [encoders] extra and weights")
    model: str = Field("facebook/vjepa2-vitl-fpc64-256", description=f"V-JEPA-2: {_MODEL_HELP}")
    revision: str | None = Field(None, description="hub branch, tag or commit of video.model")
    frames_per_window: int = Field(16, ge=2, le=64, description="frames per model window (even: tubelets are 2 frames)")
    fps: float | None = Field(None, gt=0, le=60, description="frame rate inside a window, at most decode.sample_fps "
                              "(every round(sample_fps / fps)-th sampled frame); null: every sampled frame")
    device: EncoderDevice = Field("auto", description=_DEVICE_HELP)
    dtype: EncoderDtype = Field("auto", description=_DTYPE_HELP)
    batch_size: int = Field(4, ge=1, description="windows per forward pass")
    num_gpus: float = Field(0.5, gt=0, le=1, description="GPU share per Ray actor when on cuda")
    fuse: bool = Field(True, description="add desc_video to the clustering fusion when enabled")

    @model_validator(mode="after")
    def _even(self) -> VideoConfig:
        if self.frames_per_window % 2:
            raise ValueError("video.frames_per_window must be even (V-JEPA-2 embeds pairs of frames)")
        return self


class EncoderSection(_Frozen):
    """What a learned modality's config section needs, for a section written outside this module (a
    modality registered with ``config=``, :mod:`handclust.modalities.registry`): switched by ``enabled``,
    fused by ``fuse``, and the keys :class:`~handclust.modalities.encoders.base.EncoderStage` reads.
    Subclass it and add the modality's own keys; every key needs a default."""

    enabled: bool = Field(False, description="compute this modality (its frame stage and desc_<name>)")
    fuse: bool = Field(True, description="add its descriptor to the clustering fusion when enabled")
    device: EncoderDevice = Field("auto", description=_DEVICE_HELP)
    dtype: EncoderDtype = Field("auto", description=_DTYPE_HELP)
    batch_size: int = Field(32, ge=1, description="frames per forward pass")
    num_gpus: float = Field(0.5, gt=0, le=1, description="GPU share per Ray actor when on cuda")


MASONRY_TOOLS = ("trowel", "mortar bucket", "brick", "concrete block", "rubber mallet", "spirit level", "rebar",
                 "wheelbarrow", "gloved hand", "safety vest", "shovel", "mortar mixer", "tape measure", "string line",
                 "scaffolding", "hard hat")


class ToolsConfig(_Frozen):
    """OWLv2 open-vocabulary tool presence on a subset of frames."""

    enabled: bool = Field(False, description="OWLv2 tool scores per frame (tool_scores, desc_tools); needs the [encoders] extra and weights")
    model: str = Field("google/owlv2-base-patch16-ensemble", description=f"OWLv2: {_MODEL_HELP}")
    revision: str | None = Field(None, description="hub branch, tag or commit of tools.model")
    fps: float = Field(1.0, gt=0, le=60, description="frames per second scored (at most decode.sample_fps)")
    prompts: tuple[str, ...] = Field(MASONRY_TOOLS, min_length=1, description="what to look for, one name each")
    prompt_template: str = Field("a photo of a {}", description="each prompt is put into this text ({} = prompt)")
    top_k: int = Field(3, ge=1, description="tools listed per activity in eval.json")
    device: EncoderDevice = Field("auto", description=_DEVICE_HELP)
    dtype: EncoderDtype = Field("auto", description=_DTYPE_HELP)
    batch_size: int = Field(8, ge=1, description="frames per forward pass")
    num_gpus: float = Field(0.5, gt=0, le=1, description="GPU share per Ray actor when on cuda")
    fuse: bool = Field(True, description="add desc_tools to the clustering fusion when enabled")


class PoseConfig(_Frozen):
    """MediaPipe hand and body keypoints per frame (bundled models, CPU), summarised per segment as ``desc_pose``."""

    enabled: bool = Field(True, description="run MediaPipe Hands / Pose (needs mediapipe 0.10.14, installed by `make`)")
    hands: bool = Field(True, description="hand landmarks (21 points per hand)")
    body: bool = Field(True, description="body landmarks (33 points)")
    max_hands: int = Field(2, ge=1, le=4, description="hand slots per frame (left to right in the image)")
    min_detection_confidence: float = Field(0.5, gt=0, lt=1, description="MediaPipe's detection threshold, hands and body")
    fps: float = Field(2.5, gt=0, le=60, description="frames per second looked at for hands where hands are (at most "
                       "decode.sample_fps); ~30 ms per frame on CPU")
    idle_fps: float | None = Field(0.5, gt=0, le=60, description="frames per second looked at everywhere else, and for the "
                                   "body everywhere: the hand model looks at pose.fps only within 1 / idle_fps s of a look "
                                   "that found a hand (re-decoded in the per-clip hand pass). None: hands and body at "
                                   "pose.fps everywhere. 0.5 took the CPU pipeline from 0.61 to 0.81 of decode-only speed on "
                                   "footage without hands (benchmarks/throughput.py)")
    fuse: bool = Field(True, description="add desc_pose to the clustering fusion (weighted by how many segments saw a hand or body)")
    # Anchored propagation (features/hands.py): detected hands carried to nearby looked-at frames the detector missed.
    propagate: bool = Field(True, description="carry detected hands forward and backward with Lucas-Kanade optical flow")
    max_age_frames: int = Field(10, ge=1, le=300, description="farthest a hand is carried from its anchor, in sampled frames (10 = 2 s at 5 fps)")
    track_fb_error_px: float = Field(2.0, gt=0, description="forward-backward error (px at decode.width) above which a keypoint is lost")
    track_min_points: float = Field(0.5, gt=0, le=1, description="a track ends when fewer than this share of its 21 keypoints hold")
    track_max_drift: float = Field(0.04, gt=0, lt=1, description="a track reaching a detection must land within this many frame widths of it")
    cut_min_similarity: float = Field(0.5, gt=0, lt=1, description="grey-histogram overlap below which consecutive frames are a cut (tracks stop)")

    @model_validator(mode="after")
    def _something(self) -> PoseConfig:
        if self.enabled and not (self.hands or self.body):
            raise ValueError("pose.enabled needs pose.hands or pose.body (or set pose.enabled=false)")
        return self


class SegmentConfig(_Frozen):
    min_segment_s: float = Field(3.0, gt=0, description="boundaries are at least this far apart (s)")
    max_segment_s: float = Field(15.0, gt=0, description="longer segments are split evenly")
    window_s: float = Field(2.0, gt=0, description="half-window of the motion/appearance detectors")
    smooth_s: float = Field(1.0, gt=0, description="width of the vote kernel around a proposal")
    vote_threshold: float = Field(1.2, gt=0, description="fused vote a boundary must reach")
    detector_weights: dict[Literal["motion", "appearance", "statistical"], float] = Field(
        default_factory=lambda: {"motion": 1.0, "appearance": 1.0, "statistical": 1.0},
        description="weight of each boundary detector's vote: motion novelty, appearance novelty, change points (ruptures)")
    cpd_dims: int = Field(8, ge=1, description="PCA dims fed to ruptures")
    cpd_penalty: float = Field(3.0, gt=0, description="ruptures penalty per change point, x log(n)")
    place: Literal["change", "even"] = Field("even", description="where boundaries go. 'even' (footage default): at the "
                                             "fused vote's peak, overlong segments split evenly. 'change' (segment-features "
                                             "default): each boundary moves to the frame within the vote kernel where the "
                                             "features change most, and an overlong segment is split where they change most "
                                             "(pieces of min..max_segment_s). On rendered footage 'change' lowered held-out "
                                             "ARI 0.44 -> 0.38; on real label sequences and IKEA it raised MoF and AMI")
    context_frames: int = Field(0, ge=0, description="segment-features: where the units hold fewer frames than this "
                                "(median), each unit is clustered on its own mean beside the mean of itself and as many "
                                "units on each side in its video as bring that window to this many frames (a frame every "
                                "2 s: units of 1-2 frames, one unit each side). 0: each unit's own mean only. "
                                "segment-features default 4; footage runs do not use it")

    @model_validator(mode="after")
    def _lengths(self) -> SegmentConfig:
        if self.max_segment_s < 2 * self.min_segment_s:
            raise ValueError("segment.max_segment_s must be at least 2 x segment.min_segment_s")
        return self


class DescriptorConfig(_Frozen):
    min_period_s: float = Field(0.8, gt=0, description="shortest repetition period looked for (s); a segment with fewer "
                                "than 2 distinct frames per this period leaves rhythm unmeasured")
    max_period_s: float = Field(6.0, gt=0, description="longest repetition period looked for (s)")
    rhythm_bands: int = Field(6, ge=2, le=32, description="frequency bands of the flow-rhythm descriptor (windowed FFT)")
    repetition_agreement: float = Field(0.3, gt=0, lt=1, description="relative tolerance")


# Modality name -> the config section whose `enabled` computes it (None: always computed). Written
# only by handclust.modalities.registry (the registry sits above this module: its entries hold functions that
# read these config models); handclust/__init__ imports it, so this is filled before any validation.
MODALITY_SECTIONS: dict[str, str | None] = {}


class ClusterConfig(_Frozen):
    modalities: tuple[str, ...] = Field(("scene", "motion", "ego", "rhythm"),
                                        description="modalities fused for clustering (handclust/modalities/registry.py)")
    weighting: Literal["confidence", "equal"] = Field("confidence", description="fusion weight of each modality: confidence "
                                                      "(its structure within clips, against chance) or equal")
    select_modalities: bool = Field(False, description="forward selection after weighting: starting from the most confident "
                                    "modality, the next ones join the fusion only while the fused vectors stay about as "
                                    "clustered; the rest get weight 0, with the reason in run.json. Off by default: it lifted "
                                    "the demo footage (ARI 0.34 -> 0.52, scene alone 0.54) but lowered held-out sample seeds "
                                    "(0.25 -> 0.17) and, on real IKEA segments described by four models, kept one model "
                                    "(AMI 0.173) where fusing all four gave 0.195")
    select_tolerance: float = Field(0.12, ge=0, le=1, description="forward selection: a modality joins while the fused "
                                    "vectors' clusteredness falls by less than this share (complementary modalities give "
                                    "more, looser clusters together: -11 % in tests; weak ones on sample footage -17 to -32 %)")
    min_cluster_size: int | None = Field(None, ge=2, description="None: chosen from the data (size_scale x sqrt(segments), "
                                         "at least 3)")
    size_scale: float = Field(0.5, gt=0, le=5, description="min_cluster_size = size_scale x sqrt(segments) when it is not "
                              "set: smaller finds more, smaller activities. segment-features uses 0.35 (real label "
                              "sequences, dev: per-video F1@50 0.764 -> 0.795, MoF 0.871 -> 0.858, whole-set MoF "
                              "0.838 -> 0.778); footage keeps 0.5")
    min_samples: int | None = Field(None, ge=1, description="HDBSCAN min_samples; None: half of min_cluster_size (at least 2)")
    reduce_dims: int = Field(12, ge=2, description="PCA dims per modality before fusion")
    hdbscan_dims: int | None = Field(16, ge=2, description="from hdbscan_reduce_from fitted segments on, HDBSCAN runs on this "
                                     "many principal components of the fused descriptors (its trees slow down past ~20 "
                                     "dims); None: always on all of them")
    hdbscan_reduce_from: int = Field(10_000, ge=2, description="fewer fitted segments than this: HDBSCAN on every fused "
                                     "dim (fast there, and PCA of a few dozen segments is noisy)")
    assign_noise: bool = Field(True, description="give noise segments the activity of their nearest neighbours' clusters "
                               "(the activity column; cluster keeps -1)")
    backend: Literal["auto", "cpu", "gpu"] = Field("auto", description="gpu: cuML / CuPy / FAISS-GPU (the [gpu] extra); cpu: "
                                                   "scikit-learn / umap-learn / faiss-cpu; auto: gpu when importable with a "
                                                   "CUDA device. run.json says what ran and why")
    where: Literal["auto", "driver", "ray_task"] = Field(
        "auto", description="where the joint clustering, kNN graph and 2-D map run: ray_task: one Ray task with cluster.num_gpus "
        "GPUs on a worker (the head may be CPU-only); auto: ray_task when runner=ray and backend=gpu, else the driver")
    num_gpus: float = Field(1.0, ge=0, description="GPUs the clustering task asks of Ray (where=ray_task)")
    num_cpus: int | None = Field(None, ge=1, description="threads for faiss / OpenMP / BLAS while clustering, and the CPUs "
                                 "the clustering task asks for; None: 4 in a Ray task, no limit on the driver")
    map_method: Literal["umap", "pca"] = Field("umap", description="2-D map of all segments (embedding_2d.parquet, the report)")
    knn_k: int = Field(10, ge=2, description="neighbours per segment in the kNN graph (neighbours.parquet, votes, scores)")
    second_pass: bool = Field(True, description="above max_fit_segments: each cluster the sample found is clustered again "
                              "on its members at the whole corpus' min_cluster_size and split where it holds more than one, so "
                              "an activity too rare to reach min_cluster_size in the sample is still found and K keeps growing "
                              "with the corpus")
    max_fit_segments: int = Field(50_000, ge=100, description="above this many segments, fit on a sample of this size "
                                  "and place the rest by a kNN vote")
    clip_normalise: Literal["auto", "on", "off"] = Field(
        "auto", description="standardise a modality within each clip before fusion (removes per-clip style: person, camera, "
        "light); auto: with at least 3 clips, when the modality's clip excess reaches clip_excess_threshold")
    split_groups: bool = Field(True, description="clips that come in groups (sites, trades, tasks: with at least 6 clips, "
                               "their mean fused descriptors, before per-clip normalisation, part in two with the clips of "
                               "different parts at least 1.25 x as far apart as those of the same part, each part at least 3 "
                               "clips, recursively) are clustered one group at a time and their activities numbered apart "
                               "(run.json clip_groups); an activity is then what recurs within a group. false: all clips "
                               "together, an activity may span groups. On real label sequences of two tasks cut into six "
                               "clips frame AMI 0.69 -> 0.82 (benchmarks/real.py two_levels)")
    split_groups_on: str | None = Field("scene", description="split_groups: the modality whose clip means (no per-clip "
                                        "normalisation) decide the groups: the scene embedding, a site's look. Where the "
                                        "run has no such modality (segment-features parts on its features), or None: "
                                        "every fused modality. On synthetic footage of two sites cut into files the "
                                        "scene alone parted them (distance ratio 1.42-1.67), all modalities fused did "
                                        "not (1.40-1.45: the motion cues follow the work, not the site)")
    split_groups_folders: bool = Field(True, description="split_groups: where the clips sit in two or more folders (the "
                                       "first level below the folder they share: footage/site_a/..., footage/site_b/...; "
                                       "in segment-features, features/<task>/), "
                                       "that layout is tried first and kept when its folders part the clips at 1.2 x (not "
                                       "1.25 x: a layout given beforehand is one candidate, not the best of many cuts), "
                                       "each folder at least 3 clips, at most 8 folders; else the clips are parted as if "
                                       "in one folder. Folders of one site that look alike (by day) stay together: any "
                                       "split of one real task's people into two folders gave 1.09 at most; two real tasks "
                                       "at 1.27-1.46 filed by task: held-out F1@50 0.72 -> 0.75. Folders by camera or "
                                       "lighting can part like sites: false then")
    clip_excess_threshold: float = Field(0.1, ge=0, le=1, description="auto per-clip normalisation: share of non-adjacent "
                                         "neighbours from the segment's own clip, beyond chance, from which a modality is "
                                         "normalised within clips (0: always, given 3 clips)")
    adjacent_gap: int = Field(2, ge=0, description="segments this close in time in one clip count as the same activity "
                              "continuing (left out of the confidence and fingerprint scores)")
    weight_prior_segments: float = Field(30.0, ge=0, description="confidence scores are shrunk towards the mean by this many "
                                         "pseudo-segments, so a handful of segments gives near-equal weights")
    scaling: dict[str, Literal["columns", "whole"]] = Field(
        default_factory=dict, description="per modality, how its descriptor is scaled before PCA and fusion: columns "
        "(default): each column standardised, for hand-made descriptors whose columns are in different units; whole: one "
        "scale for all columns, geometry kept, for an embedding whose dims share one unit and carry unequal variance "
        "(PCA-reduced features such as the literature's 64-d Fisher vectors, where standardising each column lifts the "
        "noise components to the weight of the signal ones). segment-features sets features=whole")
    stability: bool = Field(False, description="choose min_cluster_size (and so the number of activities) by agreement of "
                            "HDBSCAN across a range of sizes; false (default): cluster.size_scale x sqrt(n), which grows with the data, "
                            "with the agreement of its k with 0.7x and 1.4x that size reported in run.json. Selection "
                            "by agreement scored per-video MoF 0.925 vs 0.96 on 10 held-out synthetic feature sets")
    merge_single_clip: bool = Field(False, description="on for segment-features (scripted tasks); with at least 3 clips, "
                                    "a cluster found in one clip only (or in some clips only) joins the "
                                    "cluster its segments' nearest neighbours in the other clips vote for (a majority), unless "
                                    "they are farther from every other clip than 90 % of the shared clusters' segments "
                                    "(that clip shows something no other does), or the two clusters happen in the same clips "
                                    "(two activities); see handclust/core/clustering/shared.py")
    max_private_share: float | None = Field(None, gt=0, le=1, description="with at least 3 clips and min_cluster_size "
                                            "chosen from the data: when more than this share of HDBSCAN's clusters sit "
                                            "inside one clip each, HDBSCAN runs again at a coarser density (size_scale x "
                                            "1.41, up to 3 times): activities repeat across clips, so clusters of one "
                                            "clip each are that clip's own look (a person, a camera, a slow drift). None "
                                            "(default): off. Trades per-video detail for activities shared across clips: "
                                            "on the slowly drifting real sequences 0.5 gave k 12 -> 8.5 (true 6.2) and "
                                            "whole-set MoF 0.36 -> 0.42, but per-video F1@50 0.48 -> 0.45")
    temporal: bool = Field(True, description="per clip, turn cluster evidence into a timeline with a cost for switching "
                           "activity (HMM / Viterbi over segments)")
    mean_run_s: float = Field(30.0, gt=0, description="temporal model: expected length of one activity bout (s) where the "
                              "decoding starts (re-estimated from the timelines, between 1/8 and 2 x this and below a quarter of the median clip); "
                              "switching costs more the shorter a segment is against it. 60 in segment-features")
    jump_scale: bool = Field(False, description="temporal model: where the features jump at more boundaries than the bout "
                             "length expects changes, the chance of a change at a jump (0.5) is scaled down to the expected "
                             "changes over the jumps; on in segment-features (a real salad video's scores: 44 -> 20 segments "
                             "for 7 bouts), off for footage (rendered footage lost held-out ARI)")
    jump_learn: bool = Field(False, description="temporal model: the chance of a change where the features jump starts "
                             "at 0.5 (or jump_scale's value) and is re-estimated from the share of jumps the decoded "
                             "timelines changed at, the start counted as 10 jumps, at most 0.95. On in segment-features "
                             "(real IKEA frames: AMI up on 9 of 10 models), off for footage (on the demo's rendered "
                             "footage the fused run fell below scene alone with it)")
    fine: bool = Field(True, description="two levels: the joint clusters are the coarse level (what separates clips: site, "
                       "trade, phase); inside each, k-means on what is left after the cluster's and each clip's mean finds "
                       "the fine activities that timelines, labels and the report show")
    fine_max_k: int = Field(8, ge=2, description="most fine activities inside one coarse cluster")
    fine_min_silhouette: float = Field(0.1, ge=-1, le=1, description="a coarse cluster is split only when k-means on it "
                                       "reaches this silhouette (else it is one activity)")
    fine_clip_share: float = Field(0.6, ge=0, le=1, description="a coarse cluster is split only when, averaged over its "
                                   "segments, it holds at least this share of each one's clip (a kind of clip: site, trade); "
                                   "one its clips move in and out of is already an activity")
    refine: Literal["kmeans", "none"] = Field("kmeans", description="after HDBSCAN (and the fine level) chose k and where "
                                              "the activities are: k-means started from their centroids gives every segment "
                                              "its nearest activity (HDBSCAN noise included); none: HDBSCAN's own partition")
    fine_min_segments: int = Field(5, ge=2, description="a fine activity needs at least this many segments on average")
    fine_levels: int = Field(1, ge=1, le=3, description="how many times the fine split is applied: 2 splits each fine "
                             "activity once more the same way (k by silhouette), where it has at least "
                             "2 x fine_sub_min_segments segments; 1: one split per coarse cluster. 2 gave long clips of varied work "
                             "more activities (real sequences joined per task: F1@50 up, MoF down) but lowered the synthetic "
                             "helmet proxy's ARI, so it is off by default")
    fine_sub_min_segments: int = Field(20, ge=2, description="a fine activity found by a further split needs at least this "
                                       "many segments on average")
    seed: int = Field(0, description="fixes every random draw of the clustering")

    @field_validator("clip_normalise", mode="before")
    @classmethod
    def _yaml_onoff(cls, v: Any) -> Any:
        # YAML reads a bare on / off as a boolean: `--set cluster.clip_normalise=off` must still mean "off".
        return {True: "on", False: "off"}.get(v, v) if isinstance(v, bool) else v

    @field_validator("scaling")
    @classmethod
    def _scaled_known(cls, v: dict[str, str]) -> dict[str, str]:
        # "features": the one modality of segment-features, which is not a registered video modality.
        unknown = [m for m in v if m not in MODALITY_SECTIONS and m != "features"]
        if unknown:
            raise ValueError(f"cluster.scaling names unknown modality {', '.join(map(repr, unknown))}; registered: "
                             f"{', '.join(MODALITY_SECTIONS)} (and features, in segment-features)")
        return v

    @field_validator("modalities")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [m for m in v if m not in MODALITY_SECTIONS]
        if unknown:
            raise ValueError(f"unknown modality {', '.join(map(repr, unknown))}; registered: {', '.join(MODALITY_SECTIONS)}")
        return v

    @model_validator(mode="after")
    def _nonempty(self) -> ClusterConfig:
        if not self.modalities:
            raise ValueError("cluster.modalities must name at least one modality")
        return self


class LabelConfig(_Frozen):
    enabled: bool = Field(True, description="name activities with Gemini when an API key is set")
    model: str = Field("gemini-2.5-flash", description="Gemini model that names activities (google-genai)")
    api_key_env: str = Field("GEMINI_API_KEY", description="environment variable holding the API key (GEMINI_API_KEY and "
                             "GOOGLE_API_KEY are also read)")
    base_url: str | None = Field(None, description="API endpoint override (proxies, tests)")
    n_segments: int = Field(3, ge=1, le=10, description="typical segments shown per activity")
    frames_per_segment: int = Field(2, ge=1, le=8, description="keyframes sent from each typical segment")
    image_width: int = Field(384, ge=64, le=1536, description="keyframes are re-decoded at this width (px)")
    concurrency: int = Field(4, ge=1, le=64, description="requests in flight at once")
    max_retries: int = Field(4, ge=0, le=10, description="retries of a 429, time-out or 5xx (exponential backoff)")
    backoff_s: float = Field(2.0, ge=0, description="first backoff (s), doubled per retry; a 429's Retry-After waits longer")
    timeout_s: float = Field(60.0, gt=0, description="time-out of one request (s)")
    # The budget: labelling stops before the request that could take it past either limit; the
    # clusters left get status "budget" and are named by a rerun with a bigger budget.
    max_requests: int | None = Field(200, ge=0, description="most Gemini requests per run, retries included (None: no limit)")
    max_cost_usd: float | None = Field(2.0, ge=0, description="most estimated USD per run (prices: handclust/prices.py; None: no limit)")
    max_output_tokens: int = Field(4096, ge=64, le=65536,
                                   description="cap on each answer's tokens (thinking included), so a request's worst-case cost is known")
    usd_per_mtok: tuple[float, float] | None = Field(None, description="your (input, output) USD per million tokens; None: the table in cost.py")


class PhaseConfig(_Frozen):
    pattern: str = Field(r"(production|prep|transit|downtime)", description="regular expression whose match in a file "
                         "name is the clip's phase (clips.parquet, the phase score in eval.json)")


class EvaluationConfig(_Frozen):
    ablations: bool = Field(True, description="re-cluster on modality subsets from the stored descriptors (eval.json, ablations.parquet)")
    ablation_max_segments: int = Field(20_000, ge=100, description="ablations re-cluster the segments of whole clips drawn at "
                                       "random up to about this many (every segment below it); eval.json says which sample")


class ReportConfig(_Frozen):
    enabled: bool = Field(True, description="write report/index.html at the end of a run")
    reel: bool = Field(True, description="also write report/reel.mp4 (re-decodes a few seconds per activity)")


class CostConfig(_Frozen):
    node: str = Field("local", description="node type the run's node-hours are priced and estimated as "
                                           "(`handclust estimate --list`); local: this machine, no price")

    @model_validator(mode="after")
    def _known(self) -> CostConfig:
        from handclust.prices import NODES

        if self.node != "local" and self.node not in NODES:
            raise ValueError(f"unknown node type {self.node!r}; use local or one of: {', '.join(NODES)}")
        return self


class RayConfig(_Frozen):
    """How the Ray runner (``runner: ray``) connects and sizes its stages; no effect on outputs."""

    address: str | None = Field(None, description="Ray cluster to join; None: RAY_ADDRESS, else start a local instance")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of a local instance (None: all)")
    object_store_memory_mb: int | None = Field(None, ge=100, description="object store of a local instance (None: Ray's default)")
    concurrency: dict[str, int | tuple[int, int]] = Field(
        default_factory=dict,
        description="actors per stage name (scene, motion, ...): n, or (min, max) to autoscale; default 1")
    decode_concurrency: int | None = Field(None, ge=1, description="most clips decoding at once (None: as many as fit)")
    data_memory_mb: int | None = Field(
        None, ge=16, description="object-store memory Ray Data's backpressure aims to keep the clip pipeline under (None: "
        "its default share of the store). Long clips decode ahead of the stages; a target, not a hard cap: 48 MiB set, "
        "2 x 8 min clips peaked at 99 MiB instead of 144 (benchmarks/ray_memory.py), 40 % slower")
    decode_num_cpus: float = Field(1.0, gt=0, description="CPUs each decode task (and each clip's write task) asks of Ray")
    clips_per_wave: int | None = Field(
        None, ge=1,
        description="None: all clips in one streaming pipeline (each clip is committed as soon as it is done); N: "
                    "pipelines of N clips, one after another (the actor pools start again for each)")
    actor_num_cpus: float | None = Field(None, gt=0, description="CPUs per stage actor (None: the stage's own, capped to fit)")
    max_attempts: int = Field(3, ge=1, description="runs a clip may fail before it is quarantined")
    max_restarts: int = Field(3, ge=-1, description="restarts of a crashed stage actor (-1: unlimited)")
    max_task_retries: int = Field(3, ge=-1, description="retries of a batch lost with its worker (-1: unlimited)")


class RunConfig(_Frozen):
    decode: DecodeConfig = DecodeConfig()
    flow: FlowConfig = FlowConfig()
    scene: SceneConfig = SceneConfig()
    segment: SegmentConfig = SegmentConfig()
    descriptor: DescriptorConfig = DescriptorConfig()
    video: VideoConfig = VideoConfig()
    tools: ToolsConfig = ToolsConfig()
    pose: PoseConfig = PoseConfig()
    cluster: ClusterConfig = ClusterConfig()
    phase: PhaseConfig = PhaseConfig()
    labels: LabelConfig = LabelConfig()
    # Ray by default (DESIGN.md): a local instance, or the cluster in RAY_ADDRESS. The in-process
    # runner gives the same tables with no start-up cost: tests, notebooks, a few clips.
    runner: Literal["local", "ray"] = Field("ray", description="ray: a Ray Data pipeline (a local instance, or the cluster in "
                                        "ray.address / RAY_ADDRESS); local: in-process, no Ray start-up, same tables")
    ray: RayConfig = RayConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    report: ReportConfig = ReportConfig()
    cost: CostConfig = CostConfig()
    progress: bool = Field(True, description="print progress lines while running")

    @model_validator(mode="after")
    def _encoders(self) -> RunConfig:
        for name in self.cluster.modalities:
            section = MODALITY_SECTIONS.get(name)
            if section is not None and not getattr(self, section).enabled:
                raise ValueError(f"cluster.modalities names {name!r} but {section}.enabled is false; set {section}.enabled=true")
        if self.tools.enabled and self.tools.fps > self.decode.sample_fps:
            raise ValueError(f"tools.fps ({self.tools.fps}) must not exceed decode.sample_fps ({self.decode.sample_fps})")
        if self.video.enabled and self.video.fps is not None and self.video.fps > self.decode.sample_fps:
            raise ValueError(f"video.fps ({self.video.fps}) must not exceed decode.sample_fps ({self.decode.sample_fps}): "
                             "V-JEPA-2 windows take the decoded frames; null takes every one")
        if self.scene.fps is not None and self.scene.fps > self.decode.sample_fps:
            raise ValueError(f"scene.fps ({self.scene.fps}) must not exceed decode.sample_fps ({self.decode.sample_fps})")
        if self.pose.enabled and self.pose.fps > self.decode.sample_fps:
            raise ValueError(f"pose.fps ({self.pose.fps}) must not exceed decode.sample_fps ({self.decode.sample_fps})")
        return self


# Sections added by handclust.modalities.registry for modalities registered with their own config model
# (not one of RunConfig's fields above): add_section / remove_section are only called from there.
ADDED_SECTIONS: dict[str, type[BaseModel]] = {}


def add_section(name: str, model: type[BaseModel]) -> None:
    """Give :class:`RunConfig` a section ``name`` of ``model`` (default ``model()``), so YAML, ``--set name.key=...``,
    ``handclust config`` and run.json know it. A section RunConfig already has must be of ``model``."""
    field = RunConfig.model_fields.get(name)
    if field is not None:
        if field.annotation is not model:
            have = getattr(field.annotation, "__name__", str(field.annotation))
            raise ValueError(f"config section {name!r} is already a {have}, not {model.__name__}")
        return
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ValueError(f"config section {name!r}: give a pydantic model class (e.g. a subclass of config.EncoderSection)")
    try:
        default = model()
    except ValidationError as err:
        raise ValueError(f"config section {name!r}: every key of {model.__name__} needs a default ({err.errors()[0]['loc']})") from None
    RunConfig.model_fields[name] = FieldInfo(annotation=model, default=default, description=(model.__doc__ or "").strip() or None)
    RunConfig.model_rebuild(force=True)
    ADDED_SECTIONS[name] = model


def remove_section(name: str) -> None:
    """Take a section :func:`add_section` added off :class:`RunConfig` again (built-in sections stay)."""
    if ADDED_SECTIONS.pop(name, None) is not None:
        del RunConfig.model_fields[name]
        RunConfig.model_rebuild(force=True)


def _set_path(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node = tree
    keys = dotted.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key {dotted!r}: {key!r} is a value, not a section")
    node[keys[-1]] = value


def parse_overrides(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Turn ``["cluster.min_cluster_size=5", ...]`` into a nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set segment.min_segment_s=4")
        key, raw = item.split("=", 1)
        _set_path(tree, key.strip(), yaml.safe_load(raw))
    return tree


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# Keys earlier versions took, and what replaced them (a config that still names one gets this line).
REMOVED_KEYS = {
    "video.max_windows": "V-JEPA-2 now embeds every window of the decoded frames (no second decode, no cap per "
                         "segment); delete the key, and set video.fps lower to embed fewer frames",
}


def _explain(err: ValidationError, source: str) -> ConfigError:
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden" and key in REMOVED_KEYS:
            lines.append(f"config key {key!r} was removed: {REMOVED_KEYS[key]}")
        elif e["type"] == "extra_forbidden":
            lines.append(f"unknown config key {key!r} (see `handclust config` for valid keys)")
        else:
            lines.append(f"config key {key!r}: {e['msg']} (got {e.get('input')!r})")
    return ConfigError(f"bad config from {source}:\n  " + "\n  ".join(lines))


def load_config(
    path: str | Path | None = None,
    overrides: dict[str, Any] | list[str] | tuple[str, ...] | None = None,
) -> RunConfig:
    """Resolve defaults < YAML file < overrides into a validated :class:`RunConfig`."""
    tree: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {p} is not valid YAML: {exc}") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections, got {type(loaded).__name__}")
        tree = loaded
        source = str(p)
    if overrides:
        extra = parse_overrides(overrides) if isinstance(overrides, list | tuple) else overrides
        tree = _merge(tree, extra)
        source += " + overrides"
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as err:
        raise _explain(err, source) from None


def with_overrides(cfg: RunConfig, overrides: dict[str, Any] | list[str] | tuple[str, ...]) -> RunConfig:
    """``cfg`` with ``key=value`` strings (or a nested dict) applied on top."""
    extra = parse_overrides(overrides) if isinstance(overrides, list | tuple) else overrides
    try:
        return RunConfig.model_validate(_merge(config_to_dict(cfg), extra))
    except ValidationError as err:
        raise _explain(err, "overrides") from None


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")
