"""Perception: point clouds to DEMs, GridMap conversion, and the sim<->real CycleGAN."""
