"""Simulation side of the stack: robot description, worlds, the embedded MuJoCo simulator and scoring."""
