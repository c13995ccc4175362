"""Flipper control: controllers, the NaN-aware policy, training, evaluation and the `flipper` CLI."""
