"""``flipper rl train|eval``: bad input named with what is allowed, a short run's JSON, PNG and checkpoint, and
the evaluation of that checkpoint; checkpoints of another kind refused."""

import json

import pytest
import torch

from flipper_control.cli import main


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()  # the command sets one thread; other tests keep theirs
    yield
    torch.set_num_threads(threads)


def test_unknown_algorithm_and_environment_are_named_with_the_allowed_ones(capsys, tmp_path):
    assert main(["rl", "train", "--algo", "ppo", "--env", "CartPole-v1", "--json", str(tmp_path / "r.json")]) == 2
    msg = capsys.readouterr().err
    assert "unknown algorithm 'ppo' (--algo); allowed: dqn, ddqn-per" in msg
    assert main(["rl", "train", "--algo", "dqn", "--env", "Asterix-ram"]) == 2
    assert "unknown environment 'Asterix-ram' for --algo dqn; allowed: CartPole-v1" in capsys.readouterr().err
    assert main(["rl", "train", "--algo", "ddqn-per", "--env", "Pong"]) == 2
    assert "allowed: Asterix-ram, CartPole-v1" in capsys.readouterr().err
    assert main(["rl", "train", "--algo", "dqn", "--env", "CartPole-v1", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_colliding_outputs_are_refused_before_the_work(capsys, tmp_path):
    out = tmp_path / "q"
    assert main(["rl", "train", "--algo", "dqn", "--env", "CartPole-v1", "--out", str(out),
                 "--json", str(tmp_path / "q.json")]) == 2
    assert "q.json is also the file of --json; choose another path" in capsys.readouterr().err
    assert not (tmp_path / "q.safetensors").exists()


def test_train_writes_json_png_and_checkpoint_then_eval_reads_it(capsys, tmp_path):
    js, out = tmp_path / "run.json", tmp_path / "q"
    assert main(["rl", "train", "--algo", "dqn", "--env", "CartPole-v1", "--steps", "300", "--seed", "2",
                 "--out", str(out), "--json", str(js)]) == 0
    stdout = capsys.readouterr().out
    r = json.loads(js.read_text())
    for key in ("eval_mean_return", "eval_episodes", "env_steps", "seconds", "seed", "config", "curve"):
        assert key in r, key
    assert r["env_steps"] == 300 and r["seed"] == 2 and r["eval_episodes"] == 100 and r["algorithm"] == "dqn"
    assert r["config"]["lr"] > 0 and len(r["curve"]["episode_returns"]) == r["train_episodes"] > 0
    assert f"{r['eval_mean_return']:.1f}" in stdout
    assert (tmp_path / "run.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "q.safetensors").is_file() and (tmp_path / "q.json").is_file()
    ej = tmp_path / "eval.json"
    assert main(["rl", "eval", str(out), "--episodes", "3", "--json", str(ej)]) == 0
    e = json.loads(ej.read_text())
    assert e["algorithm"] == "dqn" and e["env"] == "CartPole-v1" and e["eval_episodes"] == 3
    assert len(e["eval_returns"]) == 3 and e["env_steps"] >= 3 * 8  # a CartPole episode lasts at least 8 steps


def test_eval_refuses_missing_and_foreign_checkpoints(capsys, tmp_path):
    assert main(["rl", "eval", str(tmp_path / "nothing")]) == 2
    assert "incomplete checkpoint" in capsys.readouterr().err
    from flipper_control.checkpoint import save_policy
    from flipper_control.policy import NanAwarePolicy

    save_policy(tmp_path / "policy", NanAwarePolicy())
    assert main(["rl", "eval", str(tmp_path / "policy")]) == 2
    err = capsys.readouterr().err
    assert "policy.json: metadata.rl (algorithm, env) is missing" in err
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["rl", "eval", str(tmp_path / "bad")]) == 2
    assert "bad.json: the sidecar is not valid JSON" in capsys.readouterr().err


def test_ss_her_trains_on_a_maze_file_and_refuses_one_without_a_path(capsys, tmp_path):
    good, bad = tmp_path / "corridor.yaml", tmp_path / "walled.yaml"
    good.write_text("name: corridor\nscale: 3\nlayout:\n  - [3, 0, 0]\n  - [1, 1, 0]\n  - [2, 0, 0]\n")
    bad.write_text("name: walled\nscale: 2\nlayout:\n  - [3, 1, 0]\n  - [1, 1, 0]\n  - [2, 0, 0]\n")
    out = tmp_path / "ss.json"
    assert main(["rl", "train", "--algo", "ss-her", "--env", str(good), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["eval_mean_return"] == 1.0 and result["env_steps"] > 0  # the greedy path reaches the goal
    capsys.readouterr()
    assert main(["rl", "train", "--algo", "ss-her", "--env", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "no path from the start" in err
    assert main(["rl", "train", "--algo", "dqn", "--env", str(good)]) == 2  # a maze file is for ss-her only
