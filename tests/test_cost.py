import pytest

from handclust.cost import NODES, estimate


def test_cost_scales_with_hours_and_nodes_split_wall_time():
    a = estimate(100, "aws-g6.xlarge", 1, ("dinov2",))
    b = estimate(200, "aws-g6.xlarge", 4, ("dinov2",))
    assert b.usd == pytest.approx(2 * a.usd)
    assert b.wall_hours == pytest.approx(a.wall_hours * 2 / 4)
    assert a.usd == pytest.approx(a.node_hours * NODES["aws-g6.xlarge"].usd_per_hour)


def test_heavier_encoders_make_the_gpu_the_bottleneck():
    light = estimate(100, "aws-g4dn.xlarge", 1, ())
    heavy = estimate(100, "aws-g4dn.xlarge", 1, ("dinov2", "vjepa2", "owlv2"))
    assert light.bottleneck == "cpu"
    assert heavy.bottleneck == "gpu" and heavy.usd > light.usd
    assert all(k in heavy.sources for k in ("vjepa2_segments_per_s", "owlv2_frames_per_s", "cpu", "price"))


def test_price_override_and_bad_input():
    assert estimate(10, "aws-g5.xlarge", usd_per_hour=0.3).node.usd_per_hour == 0.3
    with pytest.raises(ValueError, match="unknown node type"):
        estimate(10, "my-laptop")
    with pytest.raises(ValueError, match="unknown encoder"):
        estimate(10, encoders=("clip",))
