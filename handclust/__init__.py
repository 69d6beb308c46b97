"""HandClust: discover repeated activities in egocentric construction footage, without labels.

``handclust.discover(footage, out=...)`` runs the whole pipeline. Importing this package is cheap:
heavy libraries (torch, cuML, mediapipe, ray) load only inside the stages that use them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["RunConfig", "RunResult", "__version__", "assign", "discover", "evaluate", "load_config", "make_sample_footage"]

if TYPE_CHECKING:
    from handclust.assign import assign
    from handclust.config import RunConfig, load_config
    from handclust.pipeline import RunResult, discover
    from handclust.reporting.evaluation import evaluate
    from handclust.synthetic.sample import make_sample_footage


def __getattr__(name: str) -> Any:
    if name in ("discover", "RunResult"):
        from handclust import pipeline

        return getattr(pipeline, name)
    if name in ("load_config", "RunConfig"):
        from handclust import config

        return getattr(config, name)
    if name == "assign":
        from handclust.assign import assign

        return assign
    if name == "evaluate":
        from handclust.reporting.evaluation import evaluate

        return evaluate
    if name == "make_sample_footage":
        from handclust.synthetic.sample import make_sample_footage

        return make_sample_footage
    raise AttributeError(f"module 'handclust' has no attribute {name!r}")


# The modality registry fills the tables config and schema validate against (handclust/modalities/registry.py):
# imported here so that every process that imports handclust, or any of its modules, has them.
from handclust.modalities import registry as _modalities  # noqa: E402, F401
