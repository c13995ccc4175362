"""tianshou's ``PrioritizedReplayBuffer`` timed the way ``bench.rl._throughput`` times our sum tree, run from the
peer venv.

What: fill the buffer to capacity (untimed), then ``rounds`` rounds of ``sample(batch)`` + ``update_weight(idx,
random priorities)``; batches per second. Why a module of its own: tianshou cannot go into .venv (it downgrades
filelock, a torch dependency; see requirements-peers.txt), so ``make bench-peers`` installs it into .venv-peers and
``flipper bench rl --rl-parts sum_tree`` runs this module with ``.venv-peers/bin/python`` in a subprocess, which
prints one JSON line:

    python -m flipper_control.bench.rl_peer_tianshou --capacity 131072 --batch 32 --rounds 2000 --seed 0

Where tianshou is importable in the bench's own interpreter, ``_throughput`` calls ``tianshou_throughput`` in
process instead. Only numpy and tianshou are imported, so the module runs in a venv without our dependencies.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def tianshou_throughput(capacity: int, batch: int, rounds: int, rng: np.random.Generator) -> dict:
    """Batches per second of sample + update_weight of tianshou's PrioritizedReplayBuffer at one capacity (priorities
    drawn from ``rng``; tianshou samples with numpy's global generator)."""
    import tianshou
    from tianshou.data import Batch as TsBatch
    from tianshou.data import PrioritizedReplayBuffer

    buf = PrioritizedReplayBuffer(capacity, alpha=1.0, beta=0.4)
    t0 = time.perf_counter()
    for _ in range(capacity):
        buf.add(TsBatch(obs=0, act=0, rew=0.0, terminated=False, truncated=False, obs_next=0, info={}))
    fill_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(rounds):
        _, idx = buf.sample(batch)
        buf.update_weight(idx, rng.random(batch) + 0.01)
    return {"tianshou_batches_per_s": rounds / (time.perf_counter() - t0), "tianshou_version": tianshou.__version__,
            "tianshou_fill_s": fill_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m flipper_control.bench.rl_peer_tianshou", description=__doc__.split("\n")[0])
    ap.add_argument("--capacity", type=int, required=True, help="slots, filled before timing")
    ap.add_argument("--batch", type=int, default=32, help="transitions per sample")
    ap.add_argument("--rounds", type=int, default=2000, help="timed rounds of sample + update_weight")
    ap.add_argument("--seed", type=int, default=0, help="seeds the priorities and numpy's global generator")
    a = ap.parse_args(argv)
    if a.capacity < 1 or a.batch < 1 or a.rounds < 1:
        ap.error("--capacity, --batch and --rounds must be >= 1")
    try:
        import tianshou  # noqa: F401
    except ImportError as e:
        print(f"tianshou is not importable with {sys.executable}: {e} (make bench-peers installs it into .venv-peers)",
              file=sys.stderr)
        return 2
    if "torch" in sys.modules:  # tianshou imports torch; the bench runs it on one thread
        sys.modules["torch"].set_num_threads(1)
    np.random.seed(a.seed)
    out = {"capacity": a.capacity, "batch": a.batch, "rounds": a.rounds, "seed": a.seed}
    out.update(tianshou_throughput(a.capacity, a.batch, a.rounds, np.random.default_rng(a.seed)))
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
