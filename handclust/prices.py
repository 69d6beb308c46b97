"""Cloud node types and their on-demand prices: the table that config validates ``cost.node``
against and :mod:`handclust.cost` estimates with (data only, so config need not import the estimator)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class NodeType:
    name: str
    gpu: str
    gpus: int
    vcpus: int
    usd_per_hour: float  # on-demand list price; check your provider and region


# On-demand list prices (USD/h, us-east / us-central) as published by the providers; they change.
NODES: dict[str, NodeType] = {n.name: n for n in [
    NodeType("aws-g4dn.xlarge", "T4", 1, 4, 0.526),
    NodeType("aws-g5.xlarge", "A10G", 1, 4, 1.006),
    NodeType("aws-g5.4xlarge", "A10G", 1, 16, 1.624),
    NodeType("aws-g6.xlarge", "L4", 1, 4, 0.805),
    NodeType("aws-g6.4xlarge", "L4", 1, 16, 1.323),
    NodeType("aws-p4d.24xlarge", "A100-40GB", 8, 96, 32.77),
    NodeType("aws-p5.48xlarge", "H100", 8, 192, 98.32),
    NodeType("gcp-g2-standard-8", "L4", 1, 8, 0.854),
    NodeType("gcp-g2-standard-16", "L4", 1, 16, 1.147),
    NodeType("gcp-a2-highgpu-1g", "A100-40GB", 1, 12, 3.673),
    NodeType("gcp-a3-highgpu-8g", "H100", 8, 208, 88.25),
    # CPU workers (cluster_configs' cpu_worker types): decode, flow, pose; every stage of job-cpu.yaml.
    NodeType("aws-c7i.8xlarge", "none", 0, 32, 1.428),
    NodeType("gcp-n2-standard-32", "none", 0, 32, 1.554),
]}

# The CPU head node of each provider's cluster config (cluster_configs/aws.yaml, gcp.yaml): driver,
# object store directory, dashboard; up for the whole run. On-demand list prices (USD/h).
HEADS: dict[str, NodeType] = {
    "aws": NodeType("aws-m6i.4xlarge (head)", "none", 0, 16, 0.768),
    "gcp": NodeType("gcp-n2-standard-16 (head)", "none", 0, 16, 0.777),
}


# Gemini API list prices, USD per million tokens (input incl. images, output incl. thinking), paid
# tier, prompts <= 200k tokens. ASSUMED as published on ai.google.dev/gemini-api/docs/pricing in
# 2025-07 (the last time this table was checked; prices change): pass labels.usd_per_mtok for yours.
GEMINI_USD_PER_MTOK: dict[str, tuple[float, float]] = {
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
}
GEMINI_PRICES_CHECKED = "2025-07"


def gemini_price(model: str, override: tuple[float, float] | list[float] | None = None) -> tuple[float, float, str]:
    """``(USD per million input tokens, per million output tokens, where from)`` for ``model``.

    A model missing from the table is priced as the dearest one listed, so a budget never undercounts.
    """
    if override is not None:
        return float(override[0]), float(override[1]), "given (labels.usd_per_mtok)"
    known = sorted((k for k in GEMINI_USD_PER_MTOK if model.startswith(k)), key=len, reverse=True)
    if known:
        i, o = GEMINI_USD_PER_MTOK[known[0]]
        return i, o, f"assumed: {known[0]} list price as of {GEMINI_PRICES_CHECKED} (prices.GEMINI_USD_PER_MTOK)"
    dear = max(GEMINI_USD_PER_MTOK, key=lambda k: GEMINI_USD_PER_MTOK[k][1])
    i, o = GEMINI_USD_PER_MTOK[dear]
    return i, o, f"assumed: {model} is not in the price table, priced as {dear} (set labels.usd_per_mtok)"


# Tokens Gemini counts for one image: 258 per 768 x 768 tile (one tile up to 384 px on both sides).
GEMINI_TOKENS_PER_TILE = 258


def gemini_image_tokens(width: int, height: int) -> int:
    """Tokens Gemini counts for one image (258 per 768 x 768 tile; one tile when both sides <= 384 px)."""
    if width <= 384 and height <= 384:
        return GEMINI_TOKENS_PER_TILE
    return GEMINI_TOKENS_PER_TILE * -(-width // 768) * -(-height // 768)


def gemini_usd(input_tokens: int, output_tokens: int, price: tuple[float, float, str]) -> float:
    return (input_tokens * price[0] + output_tokens * price[1]) / 1e6
