"""The reinforcement-learning toolbox of seeds 001-004, each learner checked on its seed's benchmark (no ROS here).

Read it in this order; each algorithm module is one training loop, readable top to bottom (the cleanrl manner),
over the shared parts:

Shared parts
- ``replay``: uniform replay memory, a numpy ring buffer of transitions (seed 003).
- ``sum_tree``: array-based sum tree (O(log n) batched update and sampling) and proportional prioritized replay
  with importance-sampling weights, alpha and annealed beta (seed 004).
- ``networks``: MLP Q-networks (He-uniform or PyTorch initialisation, input scaling), with a typed config.
- ``checkpoint``: safetensors + JSON sidecar through ``sim.checkpoint_io``; ``metadata.rl`` names the algorithm,
  environment and frame stack; a checkpoint of another algorithm or shape is refused, naming file and field.
- ``common``: seeding, epsilon schedules, the environments (``CartPole-v1``, ``Asterix-ram``) and frame stacks,
  greedy evaluation, periodic evaluation that keeps the best weights, the NaN-loss check (``DivergedError``),
  the run's ``RunResult`` and its learning-curve PNG.

Algorithms
- ``dqn``: DQN (seed 003) on CartPole-v1: replay memory, target network, Huber loss, epsilon decay.
- ``ddqn_per``: Double DQN + prioritized replay (seed 004) on Atari Asterix RAM: 5 stacked frames, Huber loss,
  Adam 2.5e-4, He initialisation, batch 32; ``prioritized=False`` is the uniform-replay baseline.
- ``gridworld``, ``smart_start_her``: Smart Start + HER, tabular Q-learning in grid mazes (seed 001).
- ``sac``, ``cup``: SAC and CUP, critic-guided policy reuse (seed 002).

``registry``: what ``flipper rl train --algo NAME --env ENV`` can run (name -> (train function, allowed
environments), and the contract a train function keeps), and the checkpoint evaluators of ``flipper rl eval``.
The command lives in ``flipper_control.cli.rl``, the benchmarks beside their baselines in
``flipper_control.bench.rl`` (``flipper bench rl``).
"""
