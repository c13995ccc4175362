"""``flipper compare`` (flipper_control.learning.compare): transfer modes side by side over seeds.

The runs are written in the loop's own format without running it (a tiny transfer loop takes about a minute): the
configuration is ``LoopConfig(...).to_dict()``, the report is the dict ``run_loop`` builds (same keys) written by
``learning.report.render_markdown`` (which renders it, so a report missing a key the loop writes fails here), the
collections go through ``transfer.collection_entry`` and the world and section names come from the real world sets.
One slow test compares two real tiny loop runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_loop import tiny_loop

from flipper_control.cli import main
from flipper_control.cli.compare import compare_markdown
from flipper_control.learning.compare import ADDED_FIELDS, NOT_COMPARED, compare_runs, config_differences
from flipper_control.learning.imitation_config import ImitationConfig
from flipper_control.learning.loop import LoopConfig, run_loop
from flipper_control.learning.report import render_markdown, score_columns
from flipper_control.learning.transfer import collection_entry
from flipper_control.policy import PolicyConfig
from perception.cyclegan import LEGACY_FIELDS
from perception.gan_training import GanTrainConfig
from planning.planner_config import PlannerConfig
from sim.io_utils import write_json_atomic, write_text_atomic
from sim.world_sets import resolve_worlds

TEST = [w.name for w in resolve_worlds(["test"])]
COURSE = resolve_worlds(["proxy"])  # F, P and the staircase with sections SU1-3, SD1-3


def _spread(names: list[str], total: float) -> dict[str, float]:
    """Scores 1.0 per name, the shortfall ``len(names) - total`` taken from the first names."""
    short, out = len(names) - total, {}
    for n in names:
        take = min(1.0, max(0.0, short))
        out[n], short = round(1.0 - take, 4), short - take
    return out


def _ev(ref: str, total: float) -> dict:
    """An evaluation as ``_Loop.evaluate`` returns it (scores per world, sections of a sectioned world)."""
    if ref == "test":
        scores = _spread(TEST, total)
        return {"scores": scores, "total": round(sum(scores.values()), 4), "max": 8, "sections": {}, "runs": {}, "cpu_s": 1.0}
    cells = _spread([w.name for w in COURSE[:2]] + [s.name for s in COURSE[2].sections], total)
    sections = {s.name: cells[s.name] for s in COURSE[2].sections}
    scores = {w.name: cells[w.name] for w in COURSE[:2]} | {"staircase": round(sum(sections.values()) / 6, 4)}
    return {"scores": scores, "total": round(sum(scores.values()), 4), "max": 3, "sections": {"staircase": sections},
            "runs": {}, "cpu_s": 1.0}


def _table(ev: dict) -> dict:
    return {k: ev[k] for k in ("scores", "total", "max", "sections")}


def write_run(out: Path, mode: str | None, seed: int, *, sim: float = 7.5, test: float = 7.0, course: float = 7.0,
              driving_s: tuple[float, ...] = (), cpu_s: float = 3600.0, done: int = 2, heuristic_test: float = 7.2,
              **changes) -> Path:
    """A loop run folder as ``run_loop`` leaves it after ``done`` of 2 iterations (``mode`` None: no transfer)."""
    cfg = tiny_loop(seed=seed, eval_worlds=["test"], **changes)
    if mode:
        cfg["transfer"] = {"mode": mode} | cfg.get("transfer", {})
    config = LoopConfig.from_dict(cfg).to_dict()
    write_json_atomic(out / "config.json", config)
    heur = _ev("test", 7.5)
    report = {"config": config, "seed": seed, "iterations": [],
              "baselines": {"heuristic": {k: heur[k] for k in ("scores", "total", "max")}}}
    if mode:
        cols = [collection_entry({"index": i, "label": "heuristic", "driving_s": d, "samples": 100, "levels": ["good"],
                                  "cpu_s": 1.0}) for i, d in enumerate(driving_s)]
        report["transfer"] = {"mode": mode, "collections": cols, "driving_s": round(sum(driving_s), 2),
                              "proxy_baselines": {"heuristic": {"test": _table(_ev("test", heuristic_test)),
                                                                "proxy": _table(_ev("proxy", 8.0))}}}
    for k in range(1, done + 1):
        ev = _ev("test", sim if k == 2 else sim - 0.5)
        entry = {"iteration": k, "scores": ev["scores"], "total": ev["total"], "max": ev["max"],
                 "planning": {"guided": k > 1, "trajectories": 2, "successes": 2, "success_rate": 1.0, "cpu_s_total": 2.0,
                              "cpu_s_median": 1.0, "cpu_s_median_success": 1.0, "expansions_median": 10,
                              "action_set": "fine" if k > 1 else "coarse"},
                 "dataset": {"trajectories": 2 * k, "samples": 100 * k, "sha256": "0" * 64},
                 "training": {"kept_seed": k, "selection_score": 1.0, "test_mse": 0.05, "baseline_test_mse": 0.1,
                              "candidates": 1, "cpu_s": 1.0},
                 "policy": f"iter_{k}/policy.safetensors", "wall_s": 1.0}
        if mode:
            entry["transfer"] = {"through_gan": None}
            if mode == "gan":
                entry["transfer"]["gan"] = {"diverged": True, "error": "loss nan", "path": None, "metrics": None,
                                            "task_consistency": None}
            if k == 2:  # proxy_eval_every 0: the proxy scores of the last iteration only
                entry["transfer"]["proxy"] = {"test": _table(_ev("test", test)), "proxy": _table(_ev("proxy", course))}
        report["iterations"].append(entry)
        report["cpu_s"] = {"planning": cpu_s / 2, "training": cpu_s / 2, "evaluation": 0.0, "total": cpu_s,
                           "cpu_hours": round(cpu_s / 3600, 4)}
        report["memory"], report["wall_s"], report["final_policy"] = {}, 2.0, entry["policy"]
    # as write_report, less the learning-curve PNG (a second each); rendering checks the report has the loop's keys
    write_json_atomic(out / "report.json", report)
    write_text_atomic(out / "report.md", render_markdown(report))
    return out


@pytest.fixture
def runs(tmp_path) -> dict[str, Path]:
    """Two seeds of modes gan and identity, and an unfinished third gan seed."""
    return {"gan_0": write_run(tmp_path / "gan_0", "gan", 0, sim=7.4, test=7.0, course=7.5, driving_s=(240, 300), cpu_s=3600),
            "gan_1": write_run(tmp_path / "gan_1", "gan", 1, sim=7.6, test=7.6, course=8.0, driving_s=(600,), cpu_s=7200),
            "id_0": write_run(tmp_path / "id_0", "identity", 0, sim=7.5, test=6.9, course=5.0, heuristic_test=7.4),
            "id_1": write_run(tmp_path / "id_1", "identity", 1, sim=7.7, test=7.1, course=6.0, heuristic_test=7.4),
            "gan_2": write_run(tmp_path / "gan_2", "gan", 2, test=1.0, done=1)}


def test_modes_are_aggregated_over_finished_seeds(runs):
    cmp = compare_runs(list(runs.values()))
    gan, ident = cmp["modes"]["gan"], cmp["modes"]["identity"]
    assert list(cmp["modes"]) == ["gan", "identity"]
    assert gan["seeds"] == [0, 1] and gan["n"] == 2 and gan["unfinished"] == [str(runs["gan_2"])]
    assert gan["proxy"]["test"]["total"] == {"mean": 7.3, "min": 7.0, "max": 7.6, "n": 2}
    assert gan["proxy"]["proxy"]["total"] == {"mean": 7.75, "min": 7.5, "max": 8.0, "n": 2} and gan["proxy"]["proxy"]["max"] == 8
    assert gan["table_i_total"] == {"mean": 7.5, "min": 7.4, "max": 7.6, "n": 2}
    assert gan["driving_min"] == {"mean": 9.5, "min": 9.0, "max": 10.0, "n": 2}  # (240 + 300) s and 600 s
    assert gan["cpu_hours"] == {"mean": 1.5, "min": 1.0, "max": 2.0, "n": 2}
    assert ident["driving_min"]["mean"] == 0.0 and ident["proxy"]["test"]["total"]["mean"] == 7.0
    # per world: flat (the first world) takes the shortfall: 0.0 (seed 0) and 0.6 (seed 1); Table II's cells are the sections
    assert gan["proxy"]["test"]["per_world"]["flat"]["mean"] == 0.3 and gan["proxy"]["test"]["per_world"]["pallet"]["mean"] == 1.0
    assert list(gan["proxy"]["proxy"]["per_world"]) == ["F", "P", "SU1", "SU2", "SU3", "SD1", "SD2", "SD3"]
    # the reference controllers over every run given, the unfinished one too (they are scored first)
    heur = cmp["baselines"]["heuristic"]
    assert heur["proxy"]["test"]["total"] == {"mean": 7.28, "min": 7.2, "max": 7.4, "n": 5}
    assert heur["table_i_total"]["n"] == 5 and heur["proxy"]["proxy"]["total"]["mean"] == 8.0
    unfinished = [r for r in cmp["runs"] if not r["finished"]]
    assert [(r["path"], r["iterations_done"], r["table_i"]["iteration"]) for r in unfinished] == [(str(runs["gan_2"]), 1, 1)]


def test_the_verdict_is_computed_from_the_means(runs, tmp_path):
    def main_verdict(paths, **kw):
        return compare_runs(paths, **kw)["verdicts"][0]

    two = [runs[k] for k in ("gan_0", "gan_1", "id_0", "id_1")]
    v = main_verdict(two)  # ahead of identity by exactly 0.3 (7.3 vs 7.0), but randomize was not run
    assert v["holds"] is None and "mode randomize" in v["text"] and "cannot be decided" in v["text"]
    rand = [write_run(tmp_path / f"rand_{s}", "randomize", s, test=t) for s, t in ((0, 6.5), (1, 7.0))]
    v = main_verdict(two + rand)  # randomize mean 6.75: the smaller lead is identity's 0.30
    assert v["holds"] is True and v["value"] == pytest.approx(0.3) and v["text"].startswith(
        "learned G ahead of identity and randomize by >= 0.3/8 on the proxy test total, averaged over seeds: yes (by +0.30/8")
    assert main_verdict(two + rand, margin=0.31)["holds"] is False
    behind = write_run(tmp_path / "id_2", "identity", 2, test=8.0)  # identity mean 7.33: behind, whatever randomize does
    v = main_verdict([runs["gan_0"], runs["gan_1"], runs["id_0"], runs["id_1"], behind])
    assert v["holds"] is False and "by -0.03/8" in v["text"]
    texts = [x["text"] for x in compare_runs(two + rand)["verdicts"]]
    assert "at least two finished seeds per mode: yes (gan 2, identity 2, randomize 2)" in texts
    assert "mode gan: test worlds on the proxy at or above the heuristic's (same runs): yes (by +0.03/8: 7.30 vs 7.27)" in texts
    assert any(t.startswith("mode identity: test worlds on the proxy within 0.3 of its own simulated total: no") for t in texts)
    assert "mode gan: real (proxy) driving at most 35 min per run: yes (max 10.0 min, n=2)" in texts


def test_modes_are_paired_by_seed(runs, tmp_path):
    """gan minus each other mode over the seeds both finished: the unfinished gan seed 2 and the identity seed 3 that
    gan lacks take no part; standard error = stdev / sqrt(n)."""
    extra = write_run(tmp_path / "id_3", "identity", 3, test=2.0, course=1.0)
    paired = compare_runs([*runs.values(), extra])["paired"]
    test, course = paired["gan - identity"]["test"], paired["gan - identity"]["proxy"]
    # test: 7.0 - 6.9 and 7.6 - 7.1 -> +0.1, +0.5; course: 7.5 - 5.0 and 8.0 - 6.0 -> +2.5, +2.0
    assert test["seeds"] == [0, 1] and test["n"] == 2 and test["mean"] == pytest.approx(0.3)
    assert test["se"] == pytest.approx(0.2) and (test["ahead"], test["behind"], test["tied"]) == (2, 0, 0)
    assert course["mean"] == pytest.approx(2.25) and course["se"] == pytest.approx(0.25)
    tie = write_run(tmp_path / "rand_0", "randomize", 0, test=7.0, course=8.0)  # one seed: no standard error
    paired = compare_runs([*runs.values(), tie])["paired"]["gan - randomize"]
    assert paired["test"] == {"seeds": [0], "n": 1, "mean": 0.0, "se": None, "ahead": 0, "behind": 0, "tied": 1}
    assert paired["proxy"]["mean"] == pytest.approx(-0.5) and paired["proxy"]["behind"] == 1
    text = compare_markdown(compare_runs([*runs.values(), tie]))
    assert "| gan - identity | +0.30 +- 0.20 (n=2; 2 / 0 / 0) | +2.25 +- 0.25 (n=2; 2 / 0 / 0) |" in text
    assert "| gan - randomize | +0.00 (n=1; 0 / 0 / 1) | -0.50 (n=1; 0 / 1 / 0) |" in text


def test_compare_command_writes_markdown_and_json(runs, tmp_path, capsys):
    md, js = tmp_path / "cmp.md", tmp_path / "cmp.json"
    assert main(["compare", *map(str, runs.values()), "--out", str(md), "--json", str(js)]) == 0
    printed, err = capsys.readouterr()
    assert md.read_text().strip() == printed.strip()
    assert "| gan | 0, 1 (n=2); 1 unfinished not counted | 7.50 (7.40-7.60) | 7.30 (7.00-7.60) | 7.75 (7.50-8.00) " in printed
    assert f"| {runs['gan_2']} | gan | 2 | **unfinished** (1/2 iterations) | 7.00/8 (iteration 1) | - | - |" in printed
    assert "| heuristic (reference) | same 5 runs |" in printed and "SU1 | SU2 | SU3 | SD1 | SD2 | SD3 | sum |" in printed
    assert f"{runs['gan_2']} is unfinished (1/2 iterations)" in err
    data = json.loads(js.read_text())
    assert data["modes"]["gan"]["proxy"]["test"]["total"]["mean"] == 7.3 and data["verdicts"][0]["holds"] is None


def test_a_run_without_report_is_read_from_its_step_files(runs, tmp_path):
    run = tmp_path / "early"
    cfg = LoopConfig.from_dict(tiny_loop(seed=5, eval_worlds=["test"], transfer={"mode": "gan"})).to_dict()
    write_json_atomic(run / "config.json", cfg)
    heur = _ev("test", 7.5)
    write_json_atomic(run / "baselines.json", {"heuristic": heur})
    write_json_atomic(run / "real_0" / "collection.json", {"index": 0, "label": "heuristic", "driving_s": 120.0, "samples": 10,
                                                           "levels": ["good"], "cpu_s": 1.0, "dataset": "x", "worlds": []})
    write_json_atomic(run / "iter_1" / "eval.json", _ev("test", 6.0) | {"wall_s": 1.0})
    (r,) = compare_runs([run])["runs"]
    assert (r["finished"], r["has_report"], r["iterations_done"], r["table_i"]["total"]) == (False, False, 1, 6.0)
    assert r["driving_min"] == 2.0 and r["cpu_hours"] is None and r["baselines"]["heuristic"]["total"] == 7.5
    write_json_atomic(run / "iter_1" / "deploy_eval.json", {"total": 1.0, "driving_s": 60.0})  # choosing what to deploy
    assert compare_runs([run])["runs"][0]["driving_min"] == 3.0
    cmp = compare_runs([runs["gan_0"], run])
    assert cmp["modes"]["gan"]["n"] == 1 and cmp["modes"]["gan"]["unfinished"] == [str(run)]


def test_runs_of_one_mode_must_differ_only_in_seed(runs, tmp_path, capsys):
    other = write_run(tmp_path / "other", "gan", 3, eval_runs=2, transfer={"proxy_eval_runs": 1})
    with pytest.raises(ValueError, match="runs of mode gan differ in more than the seed") as e:
        compare_runs([runs["gan_0"], other])
    assert f"{runs['gan_0']} vs {other}" in str(e.value)
    assert "eval_runs: 1 vs 2" in str(e.value) and "transfer.proxy_eval_runs: 3 vs 1" in str(e.value)
    assert "--allow-different" in str(e.value)
    cmp = compare_runs([runs["gan_0"], other], allow_different=True)
    assert cmp["modes"]["gan"]["n"] == 2 and "eval_runs: 1 vs 2" in cmp["allowed_differences"][0]
    twin = write_run(tmp_path / "twin", "gan", 0)
    with pytest.raises(ValueError, match="share seed 0"):
        compare_runs([runs["gan_0"], twin])
    # the command says so with exit status 2; between modes a difference is reported, not refused
    assert main(["compare", str(runs["gan_0"]), str(other)]) == 2
    assert "differ in more than the seed" in capsys.readouterr().err
    cmp = compare_runs([runs["gan_0"], runs["id_0"], write_run(tmp_path / "sim", None, 0)])
    assert list(cmp["modes"]) == ["gan", "identity", "sim-only"] and cmp["modes"]["sim-only"]["proxy"] == {}
    assert cmp["differences_between_modes"]["gan vs sim-only"][0].startswith("transfer: {")
    assert "gan vs identity" not in cmp["differences_between_modes"]


def test_variants_make_each_configuration_of_a_mode_a_group_paired_by_seed(runs, tmp_path, capsys):
    shadows = [write_run(tmp_path / f"shadows_{s}", "gan", s, sim=7.0, test=t, course=7.0, driving_s=(300,),
                         transfer={"gan_shadows": True}) for s, t in ((0, 6.6), (1, 7.0))]
    given = [runs["gan_0"], runs["gan_1"], *shadows, runs["id_0"], runs["id_1"]]
    with pytest.raises(ValueError, match="--variants"):
        compare_runs(given)
    cmp = compare_runs(given, variants=True)
    label = "gan [transfer.gan_shadows=true]"
    assert list(cmp["modes"]) == ["gan", label, "identity"]
    assert cmp["modes"][label]["seeds"] == [0, 1] and cmp["modes"][label]["proxy"]["test"]["total"]["mean"] == 6.8
    pair = cmp["paired"][f"gan - {label}"]["test"]
    assert (pair["mean"], pair["ahead"], pair["behind"]) == (0.5, 2, 0)  # 7.0 - 6.6 and 7.6 - 7.0
    assert [r["group"] for r in cmp["runs"]] == ["gan", "gan", label, label, "identity", "identity"]
    assert cmp["differences_between_modes"][f"gan vs {label}"] == ["transfer.gan_shadows: false vs true"]
    assert cmp["allowed_differences"] == []
    assert any(line.startswith(f"| {shadows[0]} | {label} | 0 |") for line in compare_markdown(cmp).splitlines())
    # a spelled-out action set is named by its name, not by its JSON cut off mid-way
    rear = {"name": "coarse_rear", "dt": 1.0, "actions": {"neutral": [0.2, 0.2, -0.2, -0.2],
                                                          "climb": [0.8, 0.8, -0.2, -0.2], "descend": [-0.4, -0.4, 0.0, 0.0]}}
    spelled = write_run(tmp_path / "rear_0", "gan", 0, test=6.9, coarse={**tiny_loop(seed=0)["coarse"], "action_set": rear})
    named = compare_runs([runs["gan_0"], spelled], variants=True)
    assert list(named["modes"]) == ["gan", "gan [coarse.action_set=coarse_rear]"]
    # the first run given names the base configuration
    flipped = compare_runs([shadows[0], runs["gan_0"]], variants=True)
    assert list(flipped["modes"]) == ["gan", "gan [transfer.gan_shadows=false]"]
    # pooling and separating at once is refused, by the function and by the command's parser
    with pytest.raises(ValueError, match="choose one"):
        compare_runs(given, allow_different=True, variants=True)
    assert main(["compare", "--variants", "--allow-different", *map(str, given)]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["compare", "--variants", *map(str, given)]) == 0
    assert f"| gan - {label} | +0.50" in capsys.readouterr().out


def test_bad_input_names_the_folder_or_file(runs, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty: not a loop run \(no config.json"):
        compare_runs([tmp_path / "empty"])
    with pytest.raises(ValueError, match="nowhere: no such folder"):
        compare_runs([tmp_path / "nowhere"])
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad/config.json: not a loop config"):
        compare_runs([bad])
    (bad / "config.json").write_text('{"seed": 0}')
    with pytest.raises(ValueError, match=r"bad/config.json: not a loop config \(no integer fields iterations and seed\)"):
        compare_runs([bad])
    broken = write_run(tmp_path / "broken", "gan", 4)
    report = json.loads((broken / "report.json").read_text())
    del report["iterations"][-1]["scores"]
    (broken / "report.json").write_text(json.dumps(report))
    with pytest.raises(ValueError, match=r"broken/report.json: not in the format flipper loop writes \(KeyError: 'scores'\)"):
        compare_runs([broken])
    with pytest.raises(ValueError, match="given twice"):
        compare_runs([runs["gan_0"], str(runs["gan_0"]) + "/"])
    assert main(["compare", str(tmp_path / "empty")]) == 2
    assert "not a loop run" in capsys.readouterr().err
    # a margin that is no finite number >= 0 is refused by argparse before any run is read
    for margin in ("nan", "-0.1", "x"):
        assert main(["compare", str(runs["gan_0"]), "--margin", margin]) == 2
        assert "argument --margin: " in capsys.readouterr().err


def test_config_differences_name_the_dotted_field():
    a = {"seed": 0, "iterations": 5, "transfer": {"mode": "gan", "gan": {"epochs": 20}}}
    b = {"seed": 1, "iterations": 5, "transfer": {"mode": "gan", "gan": {"epochs": 10, "r1": 1.0}}}
    assert config_differences(a, b) == ["transfer.gan.epochs: 20 vs 10", "transfer.gan.r1: absent vs 1.0"]
    assert config_differences(a, b, ("seed", "transfer.gan")) == []
    # scoring earlier iterations on the proxy too changes no final figure
    assert config_differences({"transfer": {"proxy_eval_every": 0}}, {"transfer": {"proxy_eval_every": 2}}) == []


def test_a_field_added_later_is_absent_in_older_runs_and_equals_its_old_behaviour():
    old = {"transfer": {"mode": "gan", "gan": {"epochs": 20, "gan": {"channels": 16}}}}
    new = {"transfer": {"mode": "gan", "gan": {"epochs": 20, "gan": {"channels": 16, "occlusion_hint": False}}}}
    hinted = {"transfer": {"mode": "gan", "gan": {"epochs": 20, "gan": {"channels": 16, "occlusion_hint": True}}}}
    assert config_differences(old, new) == []
    assert config_differences(old, hinted) == ["transfer.gan.gan.occlusion_hint: false vs true"]
    # the GAN's added fields are exactly those an old checkpoint may lack, with the same meaning
    gan_fields = {k.removeprefix("transfer.gan.gan."): v for k, v in ADDED_FIELDS.items() if k.startswith("transfer.gan.gan.")}
    assert gan_fields == LEGACY_FIELDS
    # the planner's guide_range: absent in older runs means the guide's output unclipped (today's default)
    assert config_differences({"guided": {"max_cpu_s": 60}}, {"guided": {"max_cpu_s": 60, "guide_range": "robot"}}) == []
    clipped = config_differences({"guided": {}}, {"guided": {"guide_range": "actions"}})
    assert clipped == ['guided.guide_range: "robot" vs "actions"']
    assert ADDED_FIELDS["guided.guide_range"] == PlannerConfig().guide_range
    assert ADDED_FIELDS["coarse.repeat_prob"] == ADDED_FIELDS["guided.repeat_prob"] == PlannerConfig().repeat_prob
    assert ADDED_FIELDS["transfer.gan.cycle_skips_hidden"] == GanTrainConfig().cycle_skips_hidden  # the reference cycle
    # imitation's loss: absent in older runs means the squared error, the only loss there was
    assert ADDED_FIELDS["imitation.loss"] == ImitationConfig().loss == "mse"
    assert ADDED_FIELDS["imitation.huber_delta"] == ImitationConfig().huber_delta
    assert config_differences({"imitation": {"epochs": 50}}, {"imitation": {"epochs": 50, "loss": "mse"}}) == []
    assert config_differences({"imitation": {}}, {"imitation": {"loss": "l1"}}) == ['imitation.loss: "mse" vs "l1"']
    # iteration 1's guide: absent in older runs means unguided, as LoopConfig's default
    assert ADDED_FIELDS["first_guide"] is LoopConfig().first_guide is None
    assert config_differences({"seed": 0}, {"seed": 0, "first_guide": None}) == []
    assert config_differences({}, {"first_guide": "heuristic"}) == ['first_guide: null vs "heuristic"']
    # plans from the policy's own states: absent in older runs means every plan from the world's start
    for section in ("coarse", "guided"):
        assert ADDED_FIELDS[f"{section}.policy_start"] == PlannerConfig().policy_start == 0.0
        assert ADDED_FIELDS[f"{section}.policy_start_before_s"] is PlannerConfig().policy_start_before_s is None
    today = {"max_cpu_s": 60, "policy_start": 0.0, "policy_start_before_s": None}
    older = {"coarse": {"max_cpu_s": 60}, "guided": {"max_cpu_s": 60}}
    assert config_differences(older, {"coarse": today, "guided": today}) == []
    assert config_differences({"guided": {}}, {"guided": {"policy_start": 0.5}}) == ["guided.policy_start: 0.0 vs 0.5"]
    # the policy's view: absent in older runs means the whole DEM
    assert ADDED_FIELDS["imitation.policy.view_from_x"] is PolicyConfig().view_from_x is None
    policy = {"hidden": [128], "view_from_x": None}
    assert config_differences({"imitation": {"policy": {"hidden": [128]}}}, {"imitation": {"policy": policy}}) == []
    assert config_differences({"imitation": {"policy": {}}}, {"imitation": {"policy": {"view_from_x": 0.4}}}) == [
        "imitation.policy.view_from_x: null vs 0.4"]
    # the residual prior: absent in older runs means none (the network's output is the action)
    assert ADDED_FIELDS["imitation.policy.prior"] == PolicyConfig().prior == "none"
    assert config_differences({"imitation": {"policy": {}}}, {"imitation": {"policy": {"prior": "none"}}}) == []
    assert config_differences({"imitation": {"policy": {}}}, {"imitation": {"policy": {"prior": "heuristic"}}}) == [
        'imitation.policy.prior: "none" vs "heuristic"']
    assert ADDED_FIELDS["imitation.policy.rule_features"] is PolicyConfig().rule_features is False
    assert config_differences({"imitation": {"policy": {}}}, {"imitation": {"policy": {"rule_features": True}}}) == [
        "imitation.policy.rule_features: false vs true"]
    assert ADDED_FIELDS["imitation.keyframe_weight"] == ImitationConfig().keyframe_weight == 0.0
    assert config_differences({"imitation": {}}, {"imitation": {"keyframe_weight": 20.0}}) == [
        "imitation.keyframe_weight: 0.0 vs 20.0"]


@pytest.mark.slow
def test_compare_reads_real_tiny_loop_runs(tmp_path):
    """Two real (tiny) identity-mode loop runs, seeds 0 and 1: the comparison reads the format the loop writes today."""
    transfer = {"mode": "identity", "proxy_eval_worlds": ["proxy/F"], "proxy_eval_runs": 1}
    outs = [tmp_path / f"seed_{s}" for s in (0, 1)]
    for s, out in enumerate(outs):
        run_loop(LoopConfig.from_dict(tiny_loop(seed=s, transfer=transfer)), out)
    cmp = compare_runs(outs)
    ident = cmp["modes"]["identity"]
    assert ident["n"] == 2 and ident["proxy"]["proxy/F"]["total"]["n"] == 2 and ident["table_i_max"] == 2
    assert ident["driving_min"]["mean"] == 0.0 and ident["cpu_hours"]["mean"] > 0
    assert cmp["baselines"]["heuristic"]["proxy"]["proxy/F"]["total"]["n"] == 2


def test_score_columns_give_the_staircase_sections_as_table_ii_does():
    ev = {"scores": {"F": 1.0, "P": 0.5, "staircase": 0.9},
          "sections": {"staircase": {"SU1": 1.0, "SU2": 1.0, "SU3": 0.8, "SD1": 1.0, "SD2": 1.0, "SD3": 0.6}}}
    columns = score_columns(ev)
    assert list(columns) == ["F", "P", "SU1", "SU2", "SU3", "SD1", "SD2", "SD3"]  # the world's own 0.9 is not a column
    assert sum(columns.values()) == pytest.approx(6.9)
    assert score_columns({"scores": {"flat": 1.0, "step_up": 0.4}, "sections": {}}) == {"flat": 1.0, "step_up": 0.4}


def test_fields_that_change_no_result_are_dropped_at_any_depth_and_the_config_is_left_alone():
    from flipper_control.learning.config_fields import NO_RESULT_FIELDS, without_fields

    config = {"executor": "ray", "workers": 4, "seed": 1,
              "transfer": {"proxy_eval_every": 2, "mode": "gan", "paired_worlds": 4},
              "imitation": {"proxy_eval_every": 3}}  # only transfer's field of that name is listed
    kept = without_fields(config, NO_RESULT_FIELDS)
    assert kept == {"seed": 1, "transfer": {"mode": "gan"}, "imitation": {"proxy_eval_every": 3}}
    assert config["transfer"] == {"proxy_eval_every": 2, "mode": "gan", "paired_worlds": 4} and config["executor"] == "ray"
    assert without_fields({"transfer": None, "ray_address": "h:1"}, NO_RESULT_FIELDS) == {"transfer": None}
    assert set(NO_RESULT_FIELDS) < set(NOT_COMPARED)  # compare ignores the same fields, and the seed too
