"""Safety checks (levels, Euler angles, the stateful monitor, limits) and run scoring (levels, sections)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sim.safety import FAIL, WARN, SafetyEvent, SafetyLimits, SafetyMonitor, euler_from_quat, level_of
from sim.scoring import (
    RunResult,
    eval_losses,
    judge_run,
    loss_summary,
    loss_text,
    reason_kind,
    section_levels,
    section_scores,
    world_score,
)
from sim.simulator import FAILED, SUCCESS
from sim.world import world_from_dict

LIM = SafetyLimits()
STILL = np.zeros(3)


# ----------------------------------------------------------------------------------------- pure checks
@pytest.mark.parametrize(
    "value, expected",
    [(0.0, None), (0.5, None), (1.5, WARN), (-1.5, WARN), (2.5, FAIL), (-2.5, FAIL), (1e9, FAIL)],
)
def test_level_of_thresholds(value, expected):
    assert level_of(value, warn=1.0, fail=2.0) == expected


def _quat_about(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=float) / np.linalg.norm(axis)
    return np.concatenate(([math.cos(angle / 2)], math.sin(angle / 2) * axis))


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def _rotate(q: np.ndarray, v) -> np.ndarray:
    qv = np.concatenate(([0.0], v))
    conj = q * np.array([1, -1, -1, -1])
    return _quat_mul(_quat_mul(q, qv), conj)[1:]


@pytest.mark.parametrize("angle", [0.3, -0.4, 1.2])
def test_rotation_about_y_is_pitch_and_positive_is_nose_down(angle):
    q = _quat_about([0, 1, 0], angle)
    roll, pitch, yaw = euler_from_quat(q)
    assert pitch == pytest.approx(angle) and roll == pytest.approx(0.0) and yaw == pytest.approx(0.0)
    nose = _rotate(q, [1.0, 0.0, 0.0])
    assert np.sign(nose[2]) == -np.sign(pitch), "REP 103: pitch > 0 points the nose (+x) down"


@pytest.mark.parametrize("axis, index", [([1, 0, 0], 0), ([0, 0, 1], 2)])
@pytest.mark.parametrize("angle", [0.25, -0.7])
def test_rotation_about_x_is_roll_and_about_z_is_yaw(axis, index, angle):
    angles = euler_from_quat(_quat_about(axis, angle))
    expected = [0.0, 0.0, 0.0]
    expected[index] = angle
    assert angles == pytest.approx(tuple(expected))


@pytest.mark.parametrize("roll, pitch, yaw", [(0.1, 0.2, 0.3), (-0.3, 0.5, -2.0), (0.4, -0.6, 3.0)])
def test_euler_zyx_composition(roll, pitch, yaw):
    q = _quat_mul(_quat_mul(_quat_about([0, 0, 1], yaw), _quat_about([0, 1, 0], pitch)), _quat_about([1, 0, 0], roll))
    assert euler_from_quat(q) == pytest.approx((roll, pitch, yaw))
    assert euler_from_quat(-q) == pytest.approx((roll, pitch, yaw))  # q and -q are one rotation


def test_identity_quaternion_is_level():
    assert euler_from_quat(np.array([1.0, 0.0, 0.0, 0.0])) == (0.0, 0.0, 0.0)


# ----------------------------------------------------------------------------------------- monitor
def _monitor(limits: SafetyLimits = LIM) -> SafetyMonitor:
    mon = SafetyMonitor(limits)
    mon.reset(0.0, 0.0, STILL)
    return mon


def _check(mon, t, x=None, *, roll=0.0, pitch=0.0, y=0.0, vel=STILL, contact=None) -> bool:
    """One monitor update; by default the robot makes steady progress (0.3 m/s) and is level."""
    return mon.check(t, 0.3 * t if x is None else x, y, roll, pitch, vel, contact)


@pytest.mark.parametrize("angle_name", ["pitch", "roll"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_angle_beyond_warn_warns_once_and_beyond_fail_fails(angle_name, sign):
    warn, fail = getattr(LIM, f"{angle_name}_warn"), getattr(LIM, f"{angle_name}_fail")
    mon = _monitor()
    for i in range(1, 20):
        assert not _check(mon, 0.01 * i, **{angle_name: sign * (warn + fail) / 2})
    assert [(e.severity, e.kind) for e in mon.events] == [(WARN, angle_name)]
    assert _check(mon, 0.3, **{angle_name: sign * (fail + 0.05)})
    assert [(e.severity, e.kind) for e in mon.events] == [(WARN, angle_name), (FAIL, angle_name)]
    assert mon.events[-1].t == 0.3 and mon.events[-1].x == pytest.approx(0.09)


def test_angles_within_warn_are_quiet():
    mon = _monitor()
    for i in range(1, 50):
        assert not _check(mon, 0.01 * i, pitch=0.9 * LIM.pitch_warn, roll=-0.9 * LIM.roll_warn)
    assert mon.events == []


def test_no_progress_gets_stuck_after_stuck_time():
    mon = _monitor()
    t = 0.0
    while t + 0.1 <= LIM.stuck_time:
        t += 0.1
        assert not _check(mon, t, x=0.5 * LIM.stuck_distance), f"stuck too early at {t:.1f} s"
    assert _check(mon, LIM.stuck_time + 0.1, x=0.5 * LIM.stuck_distance)
    assert [e.kind for e in mon.events] == ["stuck"] and mon.events[0].severity == FAIL


def test_slow_but_steady_progress_is_not_stuck():
    mon = _monitor()
    speed = 2 * LIM.stuck_distance / LIM.stuck_time  # stuck_distance every half stuck_time
    for i in range(1, 400):
        t = 0.1 * i
        assert not _check(mon, t, x=speed * t)
    assert mon.events == []


def test_progress_resets_the_stuck_clock():
    mon = _monitor()
    t_stop = LIM.stuck_time * 0.75
    assert not _check(mon, t_stop, x=2 * LIM.stuck_distance)  # progress, then standing still
    assert not _check(mon, t_stop + LIM.stuck_time - 0.01, x=2 * LIM.stuck_distance)
    assert _check(mon, t_stop + LIM.stuck_time + 0.01, x=2 * LIM.stuck_distance)


@pytest.mark.parametrize("part", ["mast", "body_top"])
def test_forbidden_contact_fails(part):
    mon = _monitor()
    assert _check(mon, 0.1, contact=part)
    assert [(e.severity, e.kind) for e in mon.events] == [(FAIL, "contact")]
    assert part in mon.events[0].message


def test_leaving_the_course_fails():
    mon = _monitor()
    assert not _check(mon, 0.1, y=0.9 * LIM.lateral_fail)
    assert _check(mon, 0.2, y=-1.1 * LIM.lateral_fail)
    assert [e.kind for e in mon.events] == ["lateral"]


def test_violent_acceleration_fails_and_gentle_one_does_not():
    window = LIM.accel_window
    gentle, violent = SafetyMonitor(LIM), SafetyMonitor(LIM)
    gentle.reset(0.0, 0.0, STILL)
    violent.reset(0.0, 0.0, STILL)
    # velocity change over one window: 0.5 x warn (gentle) and 1.5 x fail (violent)
    assert not _check(gentle, window, vel=np.array([0.5 * LIM.accel_warn * window, 0.0, 0.0]))
    assert _check(violent, window, vel=np.array([0.0, 0.0, -1.5 * LIM.accel_fail * window]))
    assert gentle.events == [] and [e.kind for e in violent.events] == ["accel"]
    assert violent.max_acceleration == pytest.approx(1.5 * LIM.accel_fail)


def test_monitor_state_is_a_complete_snapshot():
    """Copying ``state`` and ``events`` back restores the monitor: the simulator's snapshots rely on it."""
    mon = _monitor()
    _check(mon, 0.1, pitch=(LIM.pitch_warn + LIM.pitch_fail) / 2)
    state, events = mon.state.copy(), list(mon.events)
    _check(mon, 0.2, pitch=LIM.pitch_fail + 0.1)
    mon.state[:] = state
    mon.events = list(events)
    assert not _check(mon, 0.3, pitch=(LIM.pitch_warn + LIM.pitch_fail) / 2)  # no second warn, no fail
    assert len(mon.events) == 1


def test_explicit_fail_is_recorded():
    mon = _monitor()
    mon.fail(1.0, 0.3, "blowup", "boom")
    assert mon.events == [SafetyEvent(1.0, 0.3, FAIL, "blowup", "boom")]
    assert _check(mon, 1.1)


# ----------------------------------------------------------------------------------------- limits
@pytest.mark.parametrize("name", ["pitch", "roll", "accel"])
def test_limits_reject_warn_above_fail(name):
    fail = getattr(LIM, f"{name}_fail")
    with pytest.raises(ValueError, match=name):
        SafetyLimits(**{f"{name}_warn": fail * 1.5})


@pytest.mark.parametrize("kwargs", [{"pitch_warn": 0.0}, {"roll_warn": -0.1}, {"stuck_time": 0.0},
                                    {"stuck_distance": -1.0}, {"accel_window": 0.0}])
def test_limits_reject_non_positive_values(kwargs):
    with pytest.raises(ValueError):
        SafetyLimits(**kwargs)


def test_limits_from_dict_converts_degrees():
    lim = SafetyLimits.from_dict({"pitch_warn_deg": 30, "pitch_fail_deg": 45.0, "roll_fail": 0.6, "stuck_time": 3})
    assert lim.pitch_warn == pytest.approx(math.pi / 6)
    assert lim.pitch_fail == pytest.approx(math.pi / 4)
    assert lim.roll_fail == 0.6 and lim.stuck_time == 3.0
    assert lim.roll_warn == LIM.roll_warn  # untouched fields keep their defaults


@pytest.mark.parametrize("data", [{"pitch_limit": 1.0}, {"speed_deg": 10.0}])
def test_limits_from_dict_rejects_unknown_fields(data):
    with pytest.raises(ValueError, match="unknown"):
        SafetyLimits.from_dict(data)


def test_limits_from_dict_validates():
    with pytest.raises(ValueError):
        SafetyLimits.from_dict({"roll_warn_deg": 40, "roll_fail_deg": 30})


# ----------------------------------------------------------------------------------------- scoring
FLAT = world_from_dict({"name": "flat", "length": 3.0, "speed": 0.3})
NOMINAL = 3.0 / 0.3


def _event(x: float, severity: str, kind: str = "pitch", t: float = 1.0) -> SafetyEvent:
    return SafetyEvent(t, x, severity, kind, f"{kind} {severity} at {x} m")


def test_clean_success_is_good():
    r = judge_run(FLAT, SUCCESS, [], NOMINAL, 3.0, LIM)
    assert (r.level, r.value, r.reasons) == ("good", 1.0, [])


def test_success_with_a_warning_is_unclear():
    warn = _event(1.0, WARN)
    r = judge_run(FLAT, SUCCESS, [warn], NOMINAL, 3.0, LIM)
    assert (r.level, r.value) == ("unclear", 0.5)
    assert r.reasons == [warn.message]


def test_slow_success_is_unclear():
    r = judge_run(FLAT, SUCCESS, [], 1.05 * LIM.slow_factor * NOMINAL, 3.0, LIM)
    assert r.level == "unclear"
    assert any("slow" in reason for reason in r.reasons)
    assert judge_run(FLAT, SUCCESS, [], 0.95 * LIM.slow_factor * NOMINAL, 3.0, LIM).level == "good"


def test_failure_is_fail_with_its_reasons():
    warn, fail = _event(0.5, WARN), _event(1.2, FAIL, "contact")
    r = judge_run(FLAT, FAILED, [warn, fail], 4.0, 1.2, LIM, seed=7)
    assert (r.level, r.value, r.seed, r.world) == ("fail", 0.0, 7, "flat")
    assert r.reasons[0] == fail.message and warn.message in r.reasons


def test_unfinished_run_without_events_fails_with_the_distance():
    r = judge_run(FLAT, FAILED, [], 30.0, 1.25, LIM)
    assert r.level == "fail"
    assert len(r.reasons) == 1 and "1.25" in r.reasons[0]


def test_a_fail_event_overrides_success():
    assert judge_run(FLAT, SUCCESS, [_event(2.9, FAIL)], NOMINAL, 3.0, LIM).level == "fail"


def test_run_result_to_dict():
    r = judge_run(FLAT, SUCCESS, [_event(1.0, WARN)], NOMINAL, 3.0, LIM, seed=2)
    d = r.to_dict()
    assert d["level"] == "unclear" and d["value"] == 0.5 and d["seed"] == 2 and d["reasons"] == r.reasons


def test_proxy_staircase_sections(builtin_worlds):
    world = builtin_worlds["proxy/staircase"]
    sections = {s.name: s for s in world.sections}
    su2 = sections["SU2"]
    x_fail = (su2.start + su2.end) / 2
    fail = _event(x_fail, FAIL)
    levels = section_levels(world, [fail], distance=x_fail, finished=False)
    assert list(levels) == ["SU1", "SU2", "SU3", "SD1", "SD2", "SD3"]
    assert levels["SU1"]["level"] == "good" and levels["SU1"]["value"] == 1.0
    assert levels["SU2"]["level"] == "fail" and levels["SU2"]["reasons"] == [fail.message]
    for name in ("SU3", "SD1", "SD2", "SD3"):
        assert sections[name].start > x_fail
        assert levels[name]["level"] == "fail" and levels[name]["reasons"] == ["not reached"]
    # judge_run attaches the same per-section levels
    r = judge_run(world, FAILED, [fail], 10.0, x_fail, LIM)
    assert r.sections == levels and r.level == "fail"


def test_proxy_staircase_warning_makes_one_section_unclear(builtin_worlds):
    world = builtin_worlds["proxy/staircase"]
    sd1 = next(s for s in world.sections if s.name == "SD1")
    warn = _event((sd1.start + sd1.end) / 2, WARN)
    levels = section_levels(world, [warn], distance=world.length, finished=True)
    assert {n: v["level"] for n, v in levels.items()} == {
        "SU1": "good", "SU2": "good", "SU3": "good", "SD1": "unclear", "SD2": "good", "SD3": "good"}


def test_run_ending_inside_a_section_fails_it(builtin_worlds):
    world = builtin_worlds["proxy/staircase"]
    su3 = next(s for s in world.sections if s.name == "SU3")
    levels = section_levels(world, [], distance=su3.start + 0.1, finished=False)
    assert levels["SU2"]["level"] == "good"
    assert levels["SU3"]["level"] == "fail" and levels["SU3"]["reasons"] != ["not reached"]
    assert levels["SD1"]["reasons"] == ["not reached"]


def _run(level: str) -> RunResult:
    return RunResult("w", 0, level, 1.0, 1.0)


@pytest.mark.parametrize(
    "levels, expected",
    [(["good"], 1.0), (["good", "unclear", "fail"], 0.5), (["fail", "fail"], 0.0), (["good", "unclear"], 0.75), ([], 0.0)],
)
def test_world_score_is_the_mean(levels, expected):
    assert world_score([_run(lv) for lv in levels]) == pytest.approx(expected)


def test_section_scores_are_means_per_section(builtin_worlds):
    world = builtin_worlds["proxy/staircase"]
    clean = judge_run(world, SUCCESS, [], 30.0, world.length, LIM)
    failed = judge_run(world, FAILED, [_event(2.0, FAIL)], 30.0, 2.0, LIM)
    scores = section_scores([clean, failed])
    assert scores["SU1"] == 1.0 and scores["SU2"] == 0.5 and scores["SD3"] == 0.5


# ----------------------------------------------------------------------------------------- where the points went
def _messages_of(**check) -> list[str]:
    """The messages a fresh monitor emits for one state held for 0.2 s (real messages, not hand-written ones)."""
    mon = _monitor()
    for i in range(1, 21):
        _check(mon, 0.01 * i, **check)
    return [e.message for e in mon.events]


def test_reason_kind_reads_the_monitors_and_the_judges_messages():
    halfway = (LIM.pitch_warn + LIM.pitch_fail) / 2
    assert [reason_kind(m) for m in _messages_of(pitch=-halfway)] == ["pitch past 40 deg"]
    assert [reason_kind(m) for m in _messages_of(roll=LIM.roll_fail + 0.05)] == ["roll past 30 deg"]
    assert [reason_kind(m) for m in _messages_of(contact="mast")] == ["mast touched the terrain"]
    assert [reason_kind(m) for m in _messages_of(y=2 * LIM.lateral_fail)] == ["left the course"]
    mon = _monitor()
    _check(mon, LIM.stuck_time + 0.1, x=0.0)
    assert [reason_kind(e.message) for e in mon.events] == ["stuck"]
    violent = SafetyMonitor(LIM)
    violent.reset(0.0, 0.0, STILL)
    _check(violent, LIM.accel_window, vel=np.array([0.0, 0.0, -1.5 * LIM.accel_fail * LIM.accel_window]))
    assert [reason_kind(e.message) for e in violent.events] == [f"acceleration past {LIM.accel_fail:g} m/s^2"]
    slow = judge_run(FLAT, SUCCESS, [], 1.1 * LIM.slow_factor * NOMINAL, 3.0, LIM)
    assert [reason_kind(m) for m in slow.reasons] == ["slow"]
    assert [reason_kind(m) for m in judge_run(FLAT, FAILED, [], 30.0, 1.25, LIM).reasons] == ["did not finish"]
    assert reason_kind("something new: 3 m") == "something new"


def test_loss_summary_counts_each_kind_once_per_run_and_spans_the_runs():
    pitch = _messages_of(pitch=-(LIM.pitch_warn + LIM.pitch_fail) / 2)[0]
    warned = SafetyEvent(1.0, 1.0, WARN, "pitch", pitch)
    stuck = SafetyEvent(9.0, 1.4, FAIL, "stuck", "stuck: less than 0.1 m progress in 4 s")
    runs = [judge_run(FLAT, SUCCESS, [warned, warned], t, 3.0, LIM).to_dict() for t in (14.0, 13.5)]  # slow and warned
    runs += [judge_run(FLAT, FAILED, [stuck], 9.0, d, LIM).to_dict() for d in (1.4, 1.72)]
    runs += [judge_run(FLAT, SUCCESS, [], NOMINAL, 3.0, LIM).to_dict()]  # a good run adds nothing
    summary = loss_summary(runs)
    assert list(summary) == ["pitch past 40 deg", "slow", "stuck"]
    assert summary["pitch past 40 deg"] == {"runs": 2, "failed": 0, "time": [13.5, 14.0], "distance": [3.0, 3.0]}
    assert summary["slow"]["runs"] == 2 and summary["slow"]["time"] == [13.5, 14.0]
    assert summary["slow"]["limit"] == pytest.approx(LIM.slow_factor * NOMINAL)  # read back from the message
    assert summary["stuck"] == {"runs": 2, "failed": 2, "time": [9.0, 9.0], "distance": [1.4, 1.72]}
    text = loss_text("flat", world_score([RunResult("flat", 0, r["level"], 0, 0) for r in runs]), summary)
    assert text == "flat 0.40: pitch past 40 deg 2, slow 2 (13.50-14.00 s, limit 13.00 s), stuck 2 (at 1.40-1.72 m)"
    older = {**runs[0], "reasons": ["slow: 14.0 s for 3 m, nominal 10.0 s"]}  # written before the message had the limit
    assert "limit" not in loss_summary([older])["slow"]
    assert loss_summary(runs[-1:]) == {} and loss_text("flat", 1.0, {}) == "flat 1.00: no reason recorded"


def test_eval_losses_covers_the_worlds_below_one():
    good = judge_run(FLAT, SUCCESS, [], NOMINAL, 3.0, LIM).to_dict()
    slow = judge_run(FLAT, SUCCESS, [], 14.0, 3.0, LIM).to_dict()
    ev = {"scores": {"a": 1.0, "b": 0.75}, "runs": {"a": [good, good], "b": [good, slow]}}
    assert eval_losses(ev) == {"b": loss_summary([slow])}
