"""``flipper bench rl``: the RL toolbox on its seeds' benchmarks, each beside a baseline in the same run.

- ``dqn``: our DQN on CartPole-v1 until the mean return over 100 greedy episodes reaches 475 (solved) or the
  budget ends, beside stable-baselines3's DQN with the same hyperparameters, budget and evaluation protocol
  (greedy evaluations of 10 episodes every 2,500 steps on the same starts, the best weights kept, a target
  confirmed over 100 episodes on other starts, the same for both);
- ``sum_tree``: sample + update throughput of our sum tree (batches of 32 from 2**17 and 2**20 slots) beside a
  straightforward numpy baseline (a cumulative sum and a binary search over all priorities per batch, O(n)) and
  tianshou's ``PrioritizedReplayBuffer``, in process where it is installed, else from the peer venv .venv-peers
  (``make bench-peers``, ``bench.rl_peer_tianshou`` in a subprocess); plus a chi-square test that sampling
  frequencies follow the priorities;
- ``asterix``: DDQN + PER on Asterix RAM (seed 004's agent, seed 1337) beside DDQN with uniform replay at the
  same budget of environment steps; the mean training-episode score is seed 004's metric (its best: 587.2 over
  1M steps), the greedy (epsilon 0.05) evaluation is ours;
- ``ss_her``: Smart Start + HER against Smart Start alone on the seed's grid mazes (``bench.rl_ss_her``);
- ``cup``: CUP against plain SAC at the same step budget on the point-mass goal family (``bench.rl_cup``);
- ``cup_wall``: the same on the harder target behind a wall (``PointGoalWall-v0``), 3 seeds x 6,000 steps;
- ``flipper`` (not in the default set: it needs `make demo`'s policies in demo_out/): DDQN + PER from scratch and
  CUP fine-tuning of the imitation policy on FlipperTraversal-v0, scored on the 8 test worlds beside the imitation
  policy (``bench.rl_flipper``).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from flipper_control.bench.common import cpu_model
from flipper_control.rl.common import EvalTracker, Progress

__all__ = ["PARTS", "bench_asterix", "bench_dqn_cartpole", "bench_rl", "bench_sum_tree", "print_bench_rl"]

PARTS = ("dqn", "sum_tree", "asterix", "ss_her", "cup", "cup_wall", "flipper")
DEFAULT_PARTS = PARTS[:-1]
SEED_004_BEST_MEAN = 587.2  # seed 004, Table 2.1: Mix1 (image + RAM); the best RAM-only agent had 566.5


def _sb3_dqn_cartpole(steps: int, seed: int, config) -> dict:
    """stable-baselines3's DQN with ``config``'s hyperparameters, under our evaluation protocol."""
    import gymnasium as gym
    import stable_baselines3
    import torch
    from stable_baselines3 import DQN
    from stable_baselines3.common.callbacks import BaseCallback

    t0 = time.perf_counter()
    model = DQN("MlpPolicy", gym.make("CartPole-v1"), learning_rate=config.lr, batch_size=config.batch_size,
                buffer_size=config.buffer_size, learning_starts=config.learning_starts, gamma=config.gamma,
                target_update_interval=config.target_update_every, train_freq=config.train_every,
                gradient_steps=config.gradient_steps, exploration_fraction=0.16, exploration_final_eps=config.eps_end,
                policy_kwargs={"net_arch": list(config.hidden)}, seed=seed, verbose=0, device="cpu")
    tracker = EvalTracker(model.q_net, "CartPole-v1", seed, config.eval_episodes, config.final_eval_episodes,
                          config.target_return)

    class _Eval(BaseCallback):
        def _on_step(self) -> bool:
            n = self.model.num_timesteps
            if n == config.learning_starts or n % config.eval_every == 0:
                with torch.no_grad():
                    return not tracker.periodic(n)
            return True

    model.learn(steps, callback=_Eval())
    if not tracker.evals or tracker.evals[-1][0] != model.num_timesteps:
        tracker.periodic(model.num_timesteps)
    returns, _ = tracker.finish()
    return {"library": f"stable-baselines3 {stable_baselines3.__version__}", "eval_mean_return": float(np.mean(returns)),
            "eval_episodes": len(returns), "env_steps": int(model.num_timesteps), "solved_at_step": tracker.solved_at,
            "best_step": tracker.best_step, "evals": tracker.evals, "seconds": time.perf_counter() - t0,
            "exploration": "linear to eps_end over the first 16 % of the budget (SB3's schedule)"}


def bench_dqn_cartpole(steps: int = 50_000, seed: int = 0, peer: bool = True, progress: Progress | None = None) -> dict:
    """Our DQN on CartPole-v1 and (``peer``) stable-baselines3's at the same budget; see the module docstring."""
    from flipper_control.rl import dqn

    config = dqn.DQNConfig()
    ours = dqn.train("CartPole-v1", steps=steps, seed=seed, config=config, progress=progress).to_dict()
    ours.pop("curve")
    out = {"budget_steps": steps, "seed": seed, "target": config.target_return, "ours": ours}
    if peer:
        try:
            out["peer"] = _sb3_dqn_cartpole(steps, seed, config)
        except ImportError as exc:
            out["peer"] = {"skipped": f"stable-baselines3 is not installed ({exc})"}
    return out


def _naive_sample(priorities: np.ndarray, batch: int, rng: np.random.Generator) -> np.ndarray:
    """The straightforward proportional sample: cumulative sum over all priorities, binary search per draw."""
    cum = np.cumsum(priorities)
    return np.minimum(np.searchsorted(cum, rng.random(batch) * cum[-1], side="right"), len(priorities) - 1)


PEER_PYTHON_ENV = "FLIPPER_PEER_PYTHON"  # overrides the peer venv's python (.venv-peers/bin/python at the repo root)
PEER_TIMEOUT_S = 900.0  # per capacity; 2**20 slots take ~1.5 min (filling tianshou's buffer one transition at a time)


def peer_python() -> tuple[Path | None, str]:
    """The python of the peer venv (``make bench-peers``) and how to name it: $FLIPPER_PEER_PYTHON if set, else
    .venv-peers/bin/python at the root of the source tree this package was imported from (None if absent)."""
    env = os.environ.get(PEER_PYTHON_ENV)
    if env:
        return Path(env), f"peer python {env} (${PEER_PYTHON_ENV})"
    exe = Path(__file__).resolve().parents[2] / ".venv-peers" / "bin" / "python"
    return (exe if exe.exists() else None), "peer venv .venv-peers"


def _tianshou_in_peer(python: Path, where: str, capacity: int, batch: int, rounds: int, seed: int,
                      timeout_s: float = PEER_TIMEOUT_S) -> dict:
    """Run ``bench.rl_peer_tianshou`` with the peer venv's python; its figures, or ``tianshou_error`` saying why not."""
    if not python.exists():
        return {"tianshou_error": f"{where}: {python} does not exist (make bench-peers builds .venv-peers)"}
    cmd = [str(python), "-m", "flipper_control.bench.rl_peer_tianshou", "--capacity", str(capacity),
           "--batch", str(batch), "--rounds", str(rounds), "--seed", str(seed)]
    root = str(Path(__file__).resolve().parents[2])  # this source tree's module, whatever the peer venv has installed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=root)
    except subprocess.TimeoutExpired:
        return {"tianshou_error": f"{where}: no answer within {timeout_s:g} s ({' '.join(cmd[1:])})"}
    except OSError as e:
        return {"tianshou_error": f"{where}: could not start {python}: {e}"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip())[-600:]
        return {"tianshou_error": f"{where}: {python} exited with code {proc.returncode}: {tail}"}
    try:
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        return {"tianshou_batches_per_s": float(r["tianshou_batches_per_s"]), "tianshou_version": str(r["tianshou_version"]),
                "tianshou_where": where}
    except (IndexError, ValueError, KeyError, TypeError) as e:
        return {"tianshou_error": f"{where}: unreadable answer ({type(e).__name__}: {e}): {proc.stdout.strip()[-300:]!r}"}


def _throughput(capacity: int, batch: int, rounds: int, rng: np.random.Generator) -> dict:
    """Batches per second of sample + update at one capacity: ours, the numpy baseline, and tianshou: in process
    if it is importable, else from the peer venv (``peer_python``) in a subprocess, else None."""
    from flipper_control.rl.sum_tree import SumTree

    init = rng.random(capacity) + 0.01
    tree = SumTree(capacity)
    tree.update(np.arange(capacity), init)
    t0 = time.perf_counter()
    for _ in range(rounds):
        slots = tree.sample(batch, rng)
        tree.update(slots, rng.random(batch) + 0.01)
    ours = rounds / (time.perf_counter() - t0)
    prios = init.copy()
    naive_rounds = max(10, rounds // 10)
    t0 = time.perf_counter()
    for _ in range(naive_rounds):
        slots = _naive_sample(prios, batch, rng)
        prios[slots] = rng.random(batch) + 0.01
    naive = naive_rounds / (time.perf_counter() - t0)
    out = {"capacity": capacity, "ours_batches_per_s": ours, "naive_numpy_batches_per_s": naive,
           "speedup_vs_naive": ours / naive, "tianshou_batches_per_s": None}
    try:
        import tianshou.data  # noqa: F401  (in this interpreter: measured in process, as before the peer venv)
    except ImportError:
        python, where = peer_python()
        if python is not None:
            out.update(_tianshou_in_peer(python, where, capacity, batch, rounds, seed=int(rng.integers(2**31))))
        return out
    from flipper_control.bench.rl_peer_tianshou import tianshou_throughput

    r = tianshou_throughput(capacity, batch, rounds, rng)
    out.update(tianshou_batches_per_s=r["tianshou_batches_per_s"], tianshou_version=r["tianshou_version"],
               tianshou_where="in process")
    return out


def bench_sum_tree(capacities: tuple[int, ...] = (2**17, 2**20), batch: int = 32, rounds: int = 2000,
                   seed: int = 0) -> dict:
    """Sample + update throughput (batches per second) of the sum tree, a numpy baseline and tianshou if present,
    at each capacity; and a chi-square test of the sampling frequencies."""
    from scipy.stats import chisquare

    from flipper_control.rl.sum_tree import SumTree

    rng = np.random.default_rng(seed)
    out: dict = {"batch": batch, "throughput": [_throughput(c, batch, rounds, rng) for c in capacities]}
    errors = [t["tianshou_error"] for t in out["throughput"] if "tianshou_error" in t]
    if errors:
        out["tianshou"] = "failed: " + "; ".join(dict.fromkeys(errors))
    elif out["throughput"][0]["tianshou_batches_per_s"] is None:
        out["tianshou"] = ("not installed: run `make bench-peers` (tianshou 2.0.1 goes into its own venv, .venv-peers: "
                           "it would pull 18 packages into .venv and downgrade filelock 4.3.1 -> 3.32.7, a torch "
                           "dependency); the numpy baseline stands in")
    # statistics: 200,000 independent draws from 64 slots of random priorities, chi-square against the priorities
    small = SumTree(64)
    p = rng.random(64) + 0.05
    small.update(np.arange(64), p)
    n = 200_000
    counts = np.bincount(small.sample(n, rng, stratified=False), minlength=64)
    out["chi_square"] = {"slots": 64, "draws": n, "p_value": float(chisquare(counts, n * p / p.sum())[1])}
    return out


def bench_asterix(steps: int = 150_000, seed: int = 1337, progress: Progress | None = None) -> dict:
    """DDQN + PER and DDQN (uniform replay) on Asterix RAM, ``steps`` environment steps each."""
    from flipper_control.rl import ddqn_per

    out = {"budget_steps": steps, "seed": seed, "seed_004_best_mean": SEED_004_BEST_MEAN, "runs": {}}
    for name, prioritized in (("ddqn-per", True), ("ddqn", False)):
        t0, c0 = time.perf_counter(), time.process_time()
        config = replace(ddqn_per.default_config("Asterix-ram"), prioritized=prioritized)
        r = ddqn_per.train("Asterix-ram", steps=steps, seed=seed, config=config, progress=progress).to_dict()
        curve = r.pop("curve")
        returns = curve["episode_returns"]
        r["last_100_train_mean_return"] = float(np.mean(returns[-100:])) if returns else None
        r["cpu_hours"] = (time.process_time() - c0) / 3600
        r["wall_s"] = time.perf_counter() - t0
        r["frames_approx"] = 3 * r["env_steps"]  # each step repeats the action 2-4 frames, 3 on average
        r["evals"] = curve["evals"]
        out["runs"][name] = r
    return out


def bench_rl(parts: tuple[str, ...] = DEFAULT_PARTS, cartpole_steps: int = 50_000, asterix_steps: int = 150_000, seed: int = 0,
             peer: bool = True, progress: Progress | None = None) -> dict:
    """The parts asked for (``PARTS``), one after the other, torch on one thread."""
    import torch

    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown bench rl part(s) {', '.join(unknown)}; known: {', '.join(PARTS)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out: dict = {"cpu": cpu_model(), "torch": torch.__version__}
        if "dqn" in parts:
            out["dqn"] = bench_dqn_cartpole(cartpole_steps, seed, peer, progress)
        if "sum_tree" in parts:
            out["sum_tree"] = bench_sum_tree(seed=seed)
        if "asterix" in parts:
            out["asterix"] = bench_asterix(asterix_steps, 1337 + seed, progress)
        if "ss_her" in parts:
            from flipper_control.bench.rl_ss_her import bench_ss_her

            out["ss_her"] = bench_ss_her(progress=progress)
        if "cup" in parts:
            from flipper_control.bench.rl_cup import bench_cup

            out["cup"] = bench_cup(progress=progress)
        if "cup_wall" in parts:
            from flipper_control.bench.rl_cup import bench_cup

            out["cup_wall"] = bench_cup(seeds=3, steps=6000, progress=progress, wall=True)
        if "flipper" in parts:
            from flipper_control.bench.rl_flipper import bench_rl_flipper

            out["flipper"] = bench_rl_flipper(seed=seed, progress=progress)
    finally:
        torch.set_num_threads(threads)
    return out


def print_bench_rl(r: dict) -> None:
    """The figures as lines of text."""
    print(f"RL toolbox, one torch thread, cpu {r['cpu']}, torch {r['torch']}")
    if "dqn" in r:
        d, o = r["dqn"], r["dqn"]["ours"]
        solved = f"solved at step {o['solved_at_step']}" if o["solved_at_step"] is not None else "not solved"
        print(f"  DQN on CartPole-v1 (budget {d['budget_steps']} steps, target {d['target']:g} over 100 episodes):")
        print(f"    ours:  mean return {o['eval_mean_return']:6.1f} over {o['eval_episodes']} episodes, {solved}, "
              f"{o['env_steps']} steps, {o['seconds']:.0f} s")
        p = d.get("peer", {})
        if "skipped" in p:
            print(f"    peer:  {p['skipped']}")
        elif p:
            solved = f"solved at step {p['solved_at_step']}" if p["solved_at_step"] is not None else "not solved"
            print(f"    {p['library']}: mean return {p['eval_mean_return']:6.1f} over {p['eval_episodes']} episodes, "
                  f"{solved}, {p['env_steps']} steps, {p['seconds']:.0f} s")
    if "sum_tree" in r:
        s = r["sum_tree"]
        print(f"  sum tree, batches of {s['batch']} (sample + update), batches/s:")
        for t in s["throughput"]:
            ts = t["tianshou_batches_per_s"]
            print(f"    {t['capacity']:8d} slots: ours {t['ours_batches_per_s']:7.0f}   numpy cumsum + searchsorted (baseline) "
                  f"{t['naive_numpy_batches_per_s']:7.0f} ({t['speedup_vs_naive']:.1f}x)"
                  + (f"   tianshou {ts:7.0f}" if ts else ""))
        peer = next((t for t in s["throughput"] if t.get("tianshou_batches_per_s")), None)
        if peer is not None:
            print(f"    tianshou {peer['tianshou_version']}'s PrioritizedReplayBuffer, measured {peer['tianshou_where']}")
        if "tianshou" in s:
            print(f"    tianshou: {s['tianshou']}")
        c = s["chi_square"]
        print(f"    sampling frequencies vs priorities: chi-square p = {c['p_value']:.3f} "
              f"({c['draws']} draws, {c['slots']} slots)")
    if "asterix" in r:
        a = r["asterix"]
        print(f"  Asterix RAM, {a['budget_steps']} steps each (~{3 * a['budget_steps']} frames), seed {a['seed']}; "
              f"seed 004's best mean {a['seed_004_best_mean']} over 1M steps:")
        for name, x in a["runs"].items():
            print(f"    {name:8s}: training mean score {x['train_mean_return']:6.1f} ({x['train_episodes']} episodes; last 100: "
                  f"{x['last_100_train_mean_return']:.1f}), evaluation {x['eval_mean_return']:6.1f} over "
                  f"{x['eval_episodes']} episodes, {x['cpu_hours']:.3f} CPU-hours")


    if "ss_her" in r:
        print(f"  Smart Start + HER vs Smart Start alone ({r['ss_her']['seeds']} seeds, {r['ss_her']['episodes']} episodes; "
              f"the seed: doubled reward over the first 100 episodes):")
        for name, m in r["ss_her"]["mazes"].items():
            v, c = m["variants"], m.get("ss_her_vs_ss", {})
            ratio = c.get("reward_early_ratio")
            print(f"    {name:8s}: reward early SS {v['ss']['reward_early']:.3f}, SS+HER {v['ss+her']['reward_early']:.3f} "
                  f"(x{ratio:.2f}); steps early {100 * c['steps_early_change']:+.0f} %"
                  + (f", late {100 * c['steps_late_change']:+.0f} %" if "steps_late_change" in c else ""))
    for part in ("cup", "cup_wall"):
        if part not in r:
            continue
        c = r[part]
        print(f"  CUP vs SAC on {c['task'].get('env', 'PointGoal-v0')} ({c['seeds']} seeds x {c['steps']} steps; sources "
              f"{c['source_steps']} steps each):")
        for method, x in c["summary"].items():
            print(f"    {method:4s}: final return {x['final_return_mean']:7.2f}, success {x['final_success_rate_mean']:.2f}, "
                  f"area under the evaluation curve {x['area_under_eval_curve']:7.2f}")
    if "flipper" in r:
        from flipper_control.bench.rl_flipper import markdown

        print("  On flippers (FlipperTraversal-v0), the 8 test worlds:")
        print(markdown(r["flipper"]))


if __name__ == "__main__":  # measurements without the command: python -m flipper_control.bench.rl [parts...]
    import sys

    result = bench_rl(tuple(sys.argv[1:]) or DEFAULT_PARTS)
    print_bench_rl(result)
    print(json.dumps(result, indent=1))
