"""The embedded MuJoCo simulator: reset, closed-loop runs, bit-for-bit snapshots, noise, limits, blow-ups."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.mujoco_sim import MujocoSimulator, SimNoise
from sim.rollout import Trace, run_episode
from sim.safety import FAIL, SafetyLimits
from sim.scoring import judge_run
from sim.simulator import FAILED, RUNNING, SUCCESS
from sim.world import world_from_dict

DT = 0.1  # control period of every test


def _targets(i: int) -> np.ndarray:
    """A varying, asymmetric flipper command sequence."""
    return np.array([0.6 * math.sin(0.3 * i), 0.4 * math.cos(0.2 * i), -0.3 + 0.2 * math.sin(0.5 * i), 0.1 * i % 0.7])


def _record(sim, steps: range) -> list[tuple]:
    """Step through ``steps`` recording everything a policy and a planner could see."""
    out = []
    for i in steps:
        obs = sim.step(_targets(i), DT)
        out.append((obs.dem.copy(), obs.pitch, obs.roll, obs.flipper_angles.copy(), obs.time, sim.data.qpos.copy(),
                    sim.data.qvel.copy()))
    return out


def _assert_identical(a: list[tuple], b: list[tuple]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        for x, y in zip(ra, rb, strict=True):
            assert np.array_equal(x, y)


class Constant:
    """A controller that always commands one posture."""

    def __init__(self, targets):
        self.targets = np.asarray(targets, dtype=float)

    def reset(self) -> None:
        pass

    def act(self, obs) -> np.ndarray:
        return self.targets


# ----------------------------------------------------------------------------------------- reset and runs
@pytest.mark.parametrize("posture", [[0.0, 0.0, 0.0, 0.0], [0.5, 0.4, -0.3, -0.2], [1.2, 1.2, 1.0, 1.0]])
def test_reset_on_flat_is_level_with_the_requested_posture(quiet_sim, builtin_worlds, posture):
    world = builtin_worlds["test/flat"]
    obs = quiet_sim.reset(world, flippers=np.array(posture))
    assert abs(obs.pitch) < 1e-9 and abs(obs.roll) < 1e-9
    np.testing.assert_allclose(obs.flipper_angles, posture, atol=1e-9)
    assert obs.time == 0.0 and obs.progress == 0.0 and obs.lateral == 0.0
    assert quiet_sim.status == RUNNING and quiet_sim.events == []
    # flat ground: every DEM cell is the ground, i.e. minus the base_link height
    np.testing.assert_allclose(obs.dem, -quiet_sim.data.qpos[2], atol=1e-6)
    assert quiet_sim.data.qpos[2] > quiet_sim.robot.wheel_radius  # spawned with the wheels above the ground


def test_reset_clips_an_impossible_posture(quiet_sim, builtin_worlds):
    r = quiet_sim.robot
    obs = quiet_sim.reset(builtin_worlds["test/flat"], flippers=np.array([9.0, -9.0, 0.0, 0.0]))
    np.testing.assert_allclose(obs.flipper_angles, [r.flipper_upper, r.flipper_lower, 0.0, 0.0], atol=1e-9)


def test_flat_run_succeeds_and_reaches_the_length(quiet_sim, builtin_worlds):
    world = builtin_worlds["test/flat"]
    trace = Trace()
    result = run_episode(quiet_sim, world, Constant([0.0, 0.0, 0.0, 0.0]), control_dt=DT, trace=trace)
    assert quiet_sim.status == SUCCESS
    assert result.level == "good" and result.reasons == []
    assert result.distance >= world.length
    assert not [e for e in quiet_sim.events if e.severity == FAIL]
    # driven at the world's speed: close to the nominal time, never faster than the commanded speed allows
    nominal = world.length / world.speed
    assert 0.9 * nominal <= quiet_sim.time <= quiet_sim.limits.slow_factor * nominal
    assert len(trace.observations) == len(trace.targets) >= nominal / DT - 1
    assert max(abs(o.pitch) for o in trace.observations) < math.radians(3)


def test_step_after_the_end_is_a_no_op(quiet_sim, builtin_worlds):
    world = builtin_worlds["test/flat"]
    quiet_sim.reset(world)
    while quiet_sim.status == RUNNING:
        quiet_sim.step(np.zeros(4), 1.0)
    assert quiet_sim.status == SUCCESS
    qpos, t, events, targets = quiet_sim.data.qpos.copy(), quiet_sim.time, list(quiet_sim.events), quiet_sim.targets
    obs = quiet_sim.step(np.array([1.0, 1.0, 1.0, 1.0]), 0.5)
    assert np.array_equal(quiet_sim.data.qpos, qpos)
    assert quiet_sim.time == t == obs.time
    assert quiet_sim.status == SUCCESS and quiet_sim.events == events
    assert np.array_equal(quiet_sim.targets, targets)


def test_step_before_reset_is_an_error():
    with pytest.raises(RuntimeError):
        MujocoSimulator(noise=SimNoise(enabled=False)).step(np.zeros(4), DT)


# ----------------------------------------------------------------------------------------- snapshots
def test_set_state_replays_bit_for_bit(quiet_sim, builtin_worlds):
    quiet_sim.reset(builtin_worlds["test/stairs_up"], flippers=np.array([0.3, 0.3, 0.0, 0.0]))
    _record(quiet_sim, range(30))
    snapshot = quiet_sim.get_state()
    first = _record(quiet_sim, range(30, 50))
    # wander off on another branch, then come back
    for i in range(10):
        quiet_sim.step(-_targets(i), DT)
    assert not np.array_equal(quiet_sim.data.qpos, first[-1][5])
    quiet_sim.set_state(snapshot)
    second = _record(quiet_sim, range(30, 50))
    _assert_identical(first, second)
    assert first[-1][0].std() > 0, "the DEM should see the stairs (else the comparison is weak)"


def test_snapshot_is_not_changed_by_later_steps(quiet_sim, builtin_worlds):
    quiet_sim.reset(builtin_worlds["test/stairs_up"])
    _record(quiet_sim, range(5))
    snapshot = quiet_sim.get_state()
    physics = snapshot.physics.copy()
    _record(quiet_sim, range(5, 15))
    assert np.array_equal(snapshot.physics, physics)
    quiet_sim.set_state(snapshot)
    assert quiet_sim.time == pytest.approx(0.5)


def _explode_velocity(sim) -> None:
    sim.data.qvel[0] = 1e6


def _poison_position(sim) -> None:
    sim.data.qpos[0] = np.nan


@pytest.mark.parametrize("provoke", [_explode_velocity, _poison_position], ids=["huge-velocity", "nan-position"])
def test_set_state_restores_status_and_events(quiet_sim, builtin_worlds, provoke):
    quiet_sim.reset(builtin_worlds["test/stairs_up"])
    _record(quiet_sim, range(10))
    before = quiet_sim.get_state()
    reference = _record(quiet_sim, range(10, 15))
    quiet_sim.set_state(before)
    provoke(quiet_sim)
    quiet_sim.step(np.zeros(4), DT)
    assert quiet_sim.status == FAILED and quiet_sim.events
    quiet_sim.set_state(before)
    assert quiet_sim.status == RUNNING
    assert quiet_sim.events == list(before.events) == []
    _assert_identical(_record(quiet_sim, range(10, 15)), reference)  # and the run goes on as before


def test_set_state_from_another_world_is_rejected(quiet_sim, builtin_worlds):
    quiet_sim.reset(builtin_worlds["test/flat"])
    snapshot = quiet_sim.get_state()
    quiet_sim.reset(builtin_worlds["test/stairs_up"])
    with pytest.raises(ValueError):
        quiet_sim.set_state(snapshot)


def test_set_state_restores_the_noise_draw(builtin_worlds):
    """A snapshot of one seed's run replays exactly after the simulator was reset with another seed."""
    world = builtin_worlds["test/stairs_up"]
    sim = MujocoSimulator()
    sim.reset(world, seed=1)
    _record(sim, range(10))
    snapshot = sim.get_state()
    first = _record(sim, range(10, 20))
    sim.reset(world, seed=2)
    _record(sim, range(3))
    sim.set_state(snapshot)
    _assert_identical(_record(sim, range(10, 20)), first)


# ----------------------------------------------------------------------------------------- noise
def _noisy_run(world, seed: int, noise: SimNoise) -> list[tuple]:
    sim = MujocoSimulator(noise=noise)
    sim.reset(world, seed=seed)
    return _record(sim, range(15))


def test_same_noise_seed_gives_the_same_run(builtin_worlds):
    world = builtin_worlds["test/stairs_up"]
    _assert_identical(_noisy_run(world, 3, SimNoise()), _noisy_run(world, 3, SimNoise()))


def test_different_noise_seeds_give_different_runs(builtin_worlds):
    world = builtin_worlds["test/stairs_up"]
    a, b = _noisy_run(world, 3, SimNoise()), _noisy_run(world, 4, SimNoise())
    assert not np.array_equal(a[-1][5], b[-1][5])
    assert not np.array_equal(a[0][5], b[0][5])


def test_disabled_noise_ignores_the_seed(builtin_worlds):
    world = builtin_worlds["test/stairs_up"]
    quiet = SimNoise(enabled=False)
    _assert_identical(_noisy_run(world, 3, quiet), _noisy_run(world, 4, quiet))


# ----------------------------------------------------------------------------------------- flipper limits
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_flipper_speed_is_limited(builtin_worlds, seed):
    sim = MujocoSimulator()
    obs0 = sim.reset(builtin_worlds["test/flat"], seed=seed, flippers=np.zeros(4))
    obs = sim.step(np.ones(4), 0.5)
    moved = obs.flipper_angles - obs0.flipper_angles
    bound = sim.robot.flipper_speed * (1 + sim.noise.flipper_speed) * 0.5
    assert np.all(moved <= bound + 0.01)
    # ... and they do move, at a good part of that speed (the servo lags its set-point a little)
    assert np.all(moved >= 0.5 * sim.robot.flipper_speed * (1 - sim.noise.flipper_speed) * 0.5)


def test_flipper_targets_outside_the_limits_are_clipped(quiet_sim, builtin_worlds):
    r = quiet_sim.robot
    quiet_sim.reset(builtin_worlds["test/flat"])
    for _ in range(6):
        obs = quiet_sim.step(np.array([5.0, -5.0, 5.0, -5.0]), 1.0)
    expected = np.array([r.flipper_upper, r.flipper_lower, r.flipper_upper, r.flipper_lower])
    np.testing.assert_array_equal(quiet_sim.targets, expected)
    assert np.all(obs.flipper_angles <= r.flipper_upper + 0.02) and np.all(obs.flipper_angles >= r.flipper_lower - 0.02)
    np.testing.assert_allclose(obs.flipper_angles[[0, 2]], r.flipper_upper, atol=0.05)  # free to rise all the way


@pytest.mark.parametrize(
    "targets",
    [[np.nan, 0.0, 0.0, 0.0], [0.0, 0.0, np.inf, 0.0], [0.0, 0.0, 0.0], [[0.0, 0.0], [0.0, 0.0]]],
    ids=["nan", "inf", "three", "2x2"],
)
def test_bad_targets_raise(quiet_sim, builtin_worlds, targets):
    quiet_sim.reset(builtin_worlds["test/flat"])
    with pytest.raises(ValueError):
        quiet_sim.step(np.array(targets), DT)
    assert quiet_sim.status == RUNNING and quiet_sim.time == 0.0


# ----------------------------------------------------------------------------------------- blow-ups
@pytest.mark.parametrize(
    "provoke",
    [
        _explode_velocity,
        _poison_position,  # MuJoCo answers NaN by resetting the data: that must not pass for a normal step
    ],
    ids=["huge-velocity", "nan-position"],
)
def test_blowup_fails_the_run_without_an_exception(quiet_sim, builtin_worlds, provoke):
    quiet_sim.reset(builtin_worlds["test/stairs_up"])
    quiet_sim.step(np.zeros(4), DT)
    provoke(quiet_sim)
    obs = quiet_sim.step(np.zeros(4), DT)
    assert quiet_sim.status == FAILED
    assert [e.kind for e in quiet_sim.events if e.severity == FAIL] == ["blowup"]
    assert np.all(np.isfinite(obs.dem)) and obs.dem.shape == quiet_sim.dem_spec.shape
    result = judge_run(builtin_worlds["test/stairs_up"], quiet_sim.status, quiet_sim.events, quiet_sim.time,
                       obs.progress, quiet_sim.limits)
    assert result.level == "fail" and any("blow" in r for r in result.reasons)


def test_blowup_event_records_progress_like_other_events(quiet_sim):
    world = world_from_dict({"name": "offset_flat", "length": 3.0, "start_x": 2.0})
    quiet_sim.reset(world)
    quiet_sim.step(np.zeros(4), DT)
    quiet_sim.data.qvel[0] = 2 * quiet_sim.limits.max_speed  # just past the blow-up speed
    obs = quiet_sim.step(np.zeros(4), DT)
    assert quiet_sim.status == FAILED
    event = quiet_sim.events[-1]
    assert event.kind == "blowup"
    assert event.x == pytest.approx(obs.progress, abs=1e-6)


def test_blowup_event_says_where_and_when_it_happened(quiet_sim, builtin_worlds):
    quiet_sim.reset(builtin_worlds["test/stairs_up"])
    for _ in range(10):
        obs = quiet_sim.step(np.zeros(4), DT)
    assert obs.progress > 0.2
    _poison_position(quiet_sim)
    quiet_sim.step(np.zeros(4), DT)
    event = quiet_sim.events[-1]
    assert event.kind == "blowup"
    assert event.t >= obs.time and quiet_sim.time >= obs.time
    assert event.x == pytest.approx(obs.progress, abs=0.05)


WALL = {"name": "wall", "length": 3.0, "speed": 0.3, "time_limit": 10.0,
        "terrain": [{"type": "box", "position": [1.0, 0.0], "size": [0.3, 2.0, 1.2]}]}


def test_a_wall_gets_the_robot_stuck(builtin_worlds):
    sim = MujocoSimulator(noise=SimNoise(enabled=False))
    sim.reset(world_from_dict(WALL))
    while sim.status == RUNNING:
        sim.step(np.zeros(4), 0.5)
    assert sim.status == FAILED
    assert [e.kind for e in sim.events if e.severity == FAIL] == ["stuck"]
    assert sim.observation().progress < 1.0  # it never got past the wall's face
    assert sim.time < WALL["time_limit"]  # stuck_time (4 s) after the last progress, before the time limit


def test_time_limit_fails_the_run():
    sim = MujocoSimulator(noise=SimNoise(enabled=False), limits=SafetyLimits(stuck_time=100.0))
    sim.reset(world_from_dict(WALL))
    while sim.status == RUNNING:
        sim.step(np.zeros(4), 0.5)
    assert sim.status == FAILED
    assert [e.kind for e in sim.events if e.severity == FAIL] == ["time"]
    assert sim.time == pytest.approx(WALL["time_limit"], abs=2 * sim.model.opt.timestep)


# ----------------------------------------------------------------------------------------- the physics-step loop
def test_step_matches_the_plain_servo_loop_bit_for_bit(builtin_worlds):
    """``step`` runs its per-physics-step bookkeeping on Python floats (for speed); the trajectory must be the one
    of the plain numpy loop: each set-point moved towards its target by at most max_move, then mj_step."""
    import mujoco

    world = builtin_worlds["test/stairs_up"]
    fast, plain = MujocoSimulator(), MujocoSimulator()
    fast.reset(world, seed=3)
    plain.reset(world, seed=3)
    m, d = plain.model, plain.data
    act, max_move = plain._flip_act, plain._flip_speed * m.opt.timestep
    for i in range(40):  # 4 s of varying commands: set-points moving, arriving and standing still
        targets = np.clip(_targets(i) * (1.0 if i % 7 else 3.0), plain.robot.flipper_lower, plain.robot.flipper_upper)
        fast.step(targets, DT)
        assert fast.status == RUNNING
        for _ in range(int(round(DT / m.opt.timestep))):
            setpoint = d.ctrl[act]
            d.ctrl[act] = setpoint + np.clip(targets - setpoint, -max_move, max_move)
            mujoco.mj_step(m, d)
        for a, b in ((fast.data.qpos, d.qpos), (fast.data.qvel, d.qvel), (fast.data.ctrl, d.ctrl)):
            assert np.array_equal(a, b), f"control step {i}: the trajectories part"


def test_roll_pitch_from_quat_matches_an_independent_zyx_decomposition():
    from scipy.spatial.transform import Rotation

    from sim.safety import roll_pitch_from_quat

    rng = np.random.default_rng(0)
    for q in rng.normal(size=(200, 4)):  # (w, x, y, z)
        q /= np.linalg.norm(q)
        _, pitch, roll = Rotation.from_quat([q[1], q[2], q[3], q[0]]).as_euler("ZYX")  # intrinsic yaw, pitch, roll
        if abs(abs(pitch) - math.pi / 2) < 1e-3:
            continue  # gimbal lock: roll is not defined there
        np.testing.assert_allclose(roll_pitch_from_quat(*q.tolist()), (roll, pitch), atol=1e-9)


def test_the_mast_touching_the_ground_fails_the_run(builtin_worlds):
    # roll and acceleration limits out of reach, so that the contact is what ends the run
    sim = MujocoSimulator(noise=SimNoise(enabled=False),
                          limits=SafetyLimits(roll_warn=3.5, roll_fail=3.5, accel_warn=1e9, accel_fail=1e9))
    sim.reset(builtin_worlds["test/flat"])
    d = sim.data
    d.qpos[2] += 0.4
    d.qpos[3:7] = (0.0, 1.0, 0.0, 0.0)  # upside down above the ground: it lands on its mast
    for _ in range(20):
        sim.step(np.zeros(4), DT)
        if sim.status != RUNNING:
            break
    assert sim.status == FAILED
    assert [(e.kind, e.message) for e in sim.events] == [("contact", "mast touched the terrain")]


# A fresh interpreter: how many child processes `import sim.mujoco_sim` starts, whether glfw got imported, MUJOCO_GL.
_IMPORT_PROBE = ("import os, sys; started = []; "
                 "sys.addaudithook(lambda event, args: started.append(args[1]) if event == 'subprocess.Popen' else None); "
                 "import sim.mujoco_sim; print(len(started), 'glfw' in sys.modules, os.environ['MUJOCO_GL'])")


@pytest.mark.parametrize("user_gl", [None, "glfw"])
def test_importing_the_simulator_starts_no_child_process_unless_the_user_asks_for_rendering(user_gl):
    """`import mujoco` would import glfw, which starts a child Python to read its library's version: a stopped pool
    worker left that child's BrokenPipeError traceback on stderr. sim/ turns rendering off, unless MUJOCO_GL is set."""
    env = {k: v for k, v in os.environ.items() if k != "MUJOCO_GL"} | ({"MUJOCO_GL": user_gl} if user_gl else {})
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], cwd=Path(__file__).parents[1], env=env,
                         capture_output=True, text=True, timeout=60, check=True).stdout.split()
    if user_gl is None:
        assert out == ["0", "False", "disable"]
    else:  # the user's choice stands: mujoco loads its GLFW context as it would without us
        assert out[1:] == ["True", "glfw"]
