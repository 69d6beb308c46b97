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
