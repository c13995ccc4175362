"""Flipper control. The package itself holds the policy side (the NaN-aware policy, its checkpoints, reference
controllers, the gym env); its rooms hold the trainer (``learning``), the benchmarks (``bench``) and the
``flipper`` command (``cli``). Rooms import downward only: policy side <- learning <- bench <- cli."""
