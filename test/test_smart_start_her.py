"""Smart Start + HER (seed 001): the UCB choice, the value-iteration plan, HER relabelling and a short run."""

import math

import numpy as np
import pytest

from flipper_control.rl.gridworld import maze_from_layout, named_maze
from flipper_control.rl.smart_start_her import (
    SmartStartHERAgent,
    SmartStartHERConfig,
    plan_to,
    relabel,
    smart_start_scores,
    train_smart_start_her,
)


def test_ucb_scores_on_a_hand_example():
    values = np.array([0.0, 0.5, 0.0, 0.9])
    counts = np.array([10, 10, 1, 0])  # state 3 never visited: never a candidate, whatever its value
    scores = smart_start_scores(values, counts, c_ss=0.1)
    total = 21
    assert scores[0] == pytest.approx(math.sqrt(0.1 * math.log(total) / 10))
    assert scores[1] == pytest.approx(0.5 + math.sqrt(0.1 * math.log(total) / 10))
    assert scores[2] == pytest.approx(math.sqrt(0.1 * math.log(total) / 1))
    assert scores[3] == -np.inf
    assert int(np.argmax(scores)) == 1  # small c_ss: the value wins
    assert int(np.argmax(smart_start_scores(values, counts, c_ss=2.0))) == 2  # large c_ss: the rarely visited one


def test_agent_never_picks_the_goal_and_prefers_rare_states_when_q_is_zero():
    m = maze_from_layout([[2, 0, 0, 3]], scale=1)
    agent = SmartStartHERAgent(m, SmartStartHERConfig(), np.random.default_rng(0))
    agent.counts[:] = [5, 1, 3, 1]  # the goal (state 3) is as rare as state 1
    assert agent.choose_smart_start() == 1


def _full_model(m):
    return {(s, a): {int(m.next_state[s, a]): 1} for s in range(m.n_states) if not m.walls[m.cell(s)]
            for a in range(m.n_actions)}


def test_value_iteration_plan_reaches_the_chosen_state_by_a_shortest_way():
    m = named_maze("easy")
    q_plan = plan_to(m.goal_state, _full_model(m), m.n_states, m.n_actions)
    s, n = m.start_state, 0
    while s != m.goal_state and n < 100:
        s = m.step(s, int(np.argmax(q_plan[s])))
        n += 1
    assert s == m.goal_state and n == m.shortest_path_length() == 31


def test_plan_uses_only_known_transitions():
    m = maze_from_layout([[2, 0, 0, 0, 3]], scale=1)
    model = {(0, 1): {1: 2}, (1, 1): {2: 1}}  # only "right" from the first two cells is known
    q_plan = plan_to(2, model, m.n_states, m.n_actions, gamma=0.9)
    assert q_plan[1, 1] == pytest.approx(1.0)  # entering the target pays 1 and ends the plan
    assert q_plan[0, 1] == pytest.approx(0.9)
    assert np.count_nonzero(q_plan) == 2  # nothing is known about other pairs
    assert q_plan[3].max() == 0.0  # no known way from state 3: the agent falls back to exploring


def test_her_relabels_with_future_goals_and_recomputed_rewards():
    episode = [(0, 1, 1), (1, 1, 2), (2, 2, 5), (5, 1, 6)]
    out = relabel(episode, k=40, rng=np.random.default_rng(1))
    assert len(out) == 4 * 40
    assert [t.state for t in out[::40]] == [5, 2, 1, 0]  # newest step first
    for t in out:
        step = next(i for i, e in enumerate(episode) if e[0] == t.state)
        assert (t.action, t.next_state) == episode[step][1:]
        assert t.goal in {e[2] for e in episode[step:]}  # a state reached at this step or later
        assert t.done == (t.next_state == t.goal) and t.reward == (1.0 if t.done else 0.0)
    goals_first = {t.goal for t in out if t.state == 0}
    assert goals_first == {1, 2, 5, 6}  # 40 draws cover every future state
    assert {t.goal for t in out if t.state == 5} == {6}


def test_smart_start_reaches_the_goal_more_often_than_plain_q_learning():
    m = named_maze("easy")
    plain = SmartStartHERConfig(episodes=12, max_steps=300, smart_start=False, her=False)
    smart = SmartStartHERConfig(episodes=12, max_steps=300, her=False)
    q_wins = sum(sum(train_smart_start_her(m, plain, seed)["rewards"]) for seed in range(4))
    ss_wins = sum(sum(train_smart_start_her(m, smart, seed)["rewards"]) for seed in range(4))
    assert ss_wins >= q_wins + 8, (ss_wins, q_wins)


def test_her_spreads_the_first_success_further_back_and_keeps_the_same_early_actions():
    m = named_maze("easy")
    runs = {}
    for her in (False, True):
        cfg = SmartStartHERConfig(episodes=30, max_steps=300, her=her)
        agent = SmartStartHERAgent(m, cfg, np.random.default_rng(3))
        stats = []
        while not stats or stats[-1].reward == 0:
            stats.append(agent.run_episode())
        runs[her] = (stats, agent)
    (plain_stats, plain), (her_stats, her) = runs[False], runs[True]
    assert plain_stats == her_stats  # HER draws from its own generator: same behaviour until Q tables differ
    known_plain = int((plain.q_table(m.goal_state).max(axis=1) > 0).sum())
    known_her = int((her.q_table(m.goal_state).max(axis=1) > 0).sum())
    assert known_plain == 1  # online Q-learning: only the step into the goal has learnt anything
    assert known_her > 3  # HER's relabelled replay of the successful episode carries the reward back
    assert len(her.q) > 1 and len(plain.q) == 1  # relabelled goals got tables of their own


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="eta"):
        SmartStartHERConfig(eta=1.5)
    with pytest.raises(ValueError, match="vi_gamma must be < 1"):
        SmartStartHERConfig(vi_gamma=1.0)
