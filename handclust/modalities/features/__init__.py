"""Per-frame feature stages: motion (optical flow, ego-motion) and scene descriptors."""
