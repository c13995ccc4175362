"""Planning: the policy-guided RRT over simulator snapshots and guiding-trajectory datasets."""
