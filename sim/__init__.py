"""Simulation side of the stack: robot description, worlds, the embedded MuJoCo simulator and scoring."""

import os

# `import mujoco` also imports its GLFW rendering context unless MUJOCO_GL says otherwise, and the glfw package
# then starts a child Python to read the library's version. We never render: that child only costs every process
# (and every pool worker) a second interpreter start, and a worker stopped during its import left the child's
# BrokenPipeError traceback on the user's terminal. A user who renders sets MUJOCO_GL (glfw, egl, osmesa) themselves.
os.environ.setdefault("MUJOCO_GL", "disable")
