"""Late fusion of segment descriptors and joint clustering of all segments of all clips.

Four short steps: fuse (:mod:`.fusion`: per-modality standardise, reduce, L2-normalise, weight by
confidence), cluster (:mod:`.grouping`: HDBSCAN; the cluster count follows the data), neighbours
(:mod:`.neighbours`: a kNN graph over the fused vectors, used to assign noise to its nearest
activity), map (2-D layout for the report); then :mod:`.temporal` turns cluster evidence into a
timeline per clip. :mod:`.backends`: the clusterer, reducer and neighbour index as small objects
behind one protocol each, chosen by ``cluster.backend`` or passed in (:class:`SubModels`).
"""

from handclust.core.clustering.backends import (
    BackendError,
    Clusterer,
    ClusterFit,
    Models,
    NeighbourIndex,
    Reducer,
    SubModels,
    gpu_status,
    resolve_models,
)
from handclust.core.clustering.fusion import (
    Fusion,
    ModalityScore,
    ModalityTransform,
    clip_excess,
    clip_positions,
    fit_modality,
    fuse,
    global_clusteredness,
    normalise_within_clips,
    observed_rows,
    within_clip_clusteredness,
)
from handclust.core.clustering.grouping import (
    STABILITY_REPORT_MAX,
    Clustering,
    Grouping,
    choose_by_stability,
    choose_min_cluster_size,
    cluster_segments,
    group_segments,
    hdbscan_fit,
    hdbscan_input,
    label_agreement,
    size_candidates,
    stability_report,
    umap_fit,
)
from handclust.core.clustering.neighbours import assign_noise, knn_graph, knn_query, l2_normalise, vote_labels

__all__ = [
    "STABILITY_REPORT_MAX",
    "BackendError",
    "ClusterFit",
    "Clusterer",
    "Clustering",
    "Fusion",
    "Grouping",
    "ModalityScore",
    "ModalityTransform",
    "Models",
    "NeighbourIndex",
    "Reducer",
    "SubModels",
    "assign_noise",
    "choose_by_stability",
    "choose_min_cluster_size",
    "clip_excess",
    "clip_positions",
    "cluster_segments",
    "fit_modality",
    "fuse",
    "global_clusteredness",
    "gpu_status",
    "group_segments",
    "hdbscan_fit",
    "hdbscan_input",
    "knn_graph",
    "knn_query",
    "l2_normalise",
    "label_agreement",
    "normalise_within_clips",
    "observed_rows",
    "resolve_models",
    "size_candidates",
    "stability_report",
    "umap_fit",
    "vote_labels",
    "within_clip_clusteredness",
]
