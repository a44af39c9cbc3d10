"""The robustness study's frontier (benchmarks/study_frontier.py): the variant arms'
commands, step-time ratios and gains from the records, the target's verdicts, the figure's
data against the records, the rule for the default, and data sets that never mix."""
import itertools
import json
import os
import random
import statistics
from dataclasses import replace

import pytest

from . import load_script
from .test_robustness_study import _record, _write_records


@pytest.fixture(scope="module")
def study_module():
    return load_script("robustness_study")  # puts benchmarks/ on sys.path


@pytest.fixture(scope="module")
def frontier_module(study_module):
    return load_script("study_frontier")


def _rec(arm, seed, clean, r1, r2, word, seconds, steps=250, dataset=None):
    r = _record(arm, seed, clean, r1, r2, word, seconds)
    r["steps"] = steps
    if dataset:
        r["dataset"] = dataset
    return r


def _study(study_module, path, *extra):
    args = study_module.build_parser().parse_args(["--output", str(path), *extra])
    return study_module.Study(args)


def test_variant_arms_run_the_default_with_one_option_changed(study_module, frontier_module,
                                                              tmp_path, monkeypatch):
    study = _study(study_module, tmp_path)
    study.train_csv = "train.csv"
    ran = {}
    monkeypatch.setattr(study, "sh", lambda cmd, log: ran.__setitem__(log, cmd))
    changed = {"var-rdrop": ["--adv-direction", "none"],
               "var-random": ["--adv-direction", "random"],
               "var-free": ["--adv-direction", "free"],
               "var-half-batch": ["--adv-fraction", "0.5"]}
    assert sorted(frontier_module.VARIANT_OPTIONS) == sorted(changed)
    default = study.finetune("alum-half-alpha", 1, "minilm")
    base_cmd = ran.pop("ft-alum-half-alpha-1.log")
    for arm, option in changed.items():
        study.finetune(arm, 3, "minilm")
        cmd = ran.pop(f"ft-{arm}-3.log")
        # The default's command, seed and output aside, plus exactly the variant's option.
        strip = lambda c: [x for x in c if x not in ("1", "3", default)  # noqa: E731
                           and not x.endswith(("-seed1", "-seed3"))]
        assert strip(cmd) == strip(base_cmd) + option
        assert (arm, "standard") in study_module.PAIRS
        assert (arm, "alum-half-alpha") in study_module.PAIRS
    assert study_module.parse_arms("standard,frontier,alum") == list(
        frontier_module.FRONTIER_ARMS)
    with pytest.raises(SystemExit, match=r"unknown arms \['var-nope'\]"):
        study_module.parse_arms("frontier,var-nope")


def test_frontier_ratios_gains_and_target_verdicts(frontier_module):
    f = frontier_module
    # Seconds per step, not seconds: var-half-batch ran half the steps of its standard.
    recs = {"standard": {1: _rec("standard", 1, .70, .50, .20, .30, 100.0),
                         2: _rec("standard", 2, .72, .52, .24, .32, 120.0)},
            "alum-half-alpha": {1: _rec("alum-half-alpha", 1, .70, .60, .40, .32, 280.0),
                                2: _rec("alum-half-alpha", 2, .71, .62, .44, .34, 330.0)},
            "var-free": {1: _rec("var-free", 1, .703, .58, .37, .31, 200.0),
                         2: _rec("var-free", 2, .714, .60, .41, .33, 236.0)},
            "var-half-batch": {1: _rec("var-half-batch", 1, .69, .55, .30, .30, 90.0, 125),
                               2: _rec("var-half-batch", 2, .70, .57, .33, .32, 110.0, 125)},
            "var-rdrop": {3: _rec("var-rdrop", 3, .7, .5, .2, .3, 1.0)}}  # no pair: no point
    front = f.frontier(recs, [0.02, 0.05])
    assert list(front["arms"]) == ["standard", "alum-half-alpha", "var-free", "var-half-batch"]
    hb = front["arms"]["var-half-batch"]
    assert hb["step_ratio"]["values"] == pytest.approx([(90 / 125) / (100 / 250),
                                                        (110 / 125) / (120 / 250)])
    assert hb["r2"]["values"] == pytest.approx([0.10, 0.09])
    assert hb["clean"]["std"] == pytest.approx(statistics.stdev([-0.01, -0.02]))
    d = front["arms"]["alum-half-alpha"]
    assert d["r2"]["mean"] == pytest.approx(0.2)
    v = front["verdicts"]
    assert set(v) == {"var-free", "var-half-batch"}
    # var-free: 2.0x and 1.97x, 17 of the default's 20 points, clean 0.35 points above it.
    assert v["var-free"]["share_of_default"] == pytest.approx(0.17 / 0.2)
    assert v["var-free"]["clean_vs_default"] == pytest.approx(0.0035)
    assert v["var-free"]["meets"]
    # var-half-batch: fast, but 9.5 of 20 points (47.5%) and clean 1 point below the default's.
    s = v["var-half-batch"]["short"]
    assert v["var-half-batch"]["meets"] is False
    assert s["step_ratio"] == 0.0
    assert s["share"] == pytest.approx(0.8 - 0.095 / 0.2)
    assert s["clean"] == pytest.approx(0.01 - 0.005)
    assert hb["step_basis"] == "wall"
    # The verdict says on which side of the band a clean change falls.
    labels = {"clean": "clean", "r1": "r1", "r2": "r2", "word": "word"}
    row = next(r for r in f.frontier_table(front, labels) if r.startswith("| var-half-batch "))
    assert row.endswith("| short: 33% of the gain, clean 0.5 points below the band |"), row
    recs["var-half-batch"][1]["clean"] = recs["var-half-batch"][2]["clean"] = 0.735
    row = next(r for r in f.frontier_table(f.frontier(recs, [0.02, 0.05]), labels)
               if r.startswith("| var-half-batch "))
    assert "clean 2.5 points above the band" in row, row
    # CPU time is the basis where both records of a seed have it: the training's, else
    # the command's, else the wall time.
    recs["standard"][1].update(train_cpu_seconds=400.0, command_cpu_seconds=430.0)
    recs["var-free"][1].update(train_cpu_seconds=820.0, command_cpu_seconds=850.0)
    recs["standard"][2]["command_cpu_seconds"] = 500.0
    recs["var-free"][2].update(train_cpu_seconds=900.0, command_cpu_seconds=1000.0)
    fr = f.frontier(recs, [0.02, 0.05])["arms"]["var-free"]
    assert fr["step_ratio"]["values"] == pytest.approx([820 / 400, 1000 / 500])
    assert fr["step_basis"] == "command-cpu+cpu"
    del recs["standard"][2]["command_cpu_seconds"]
    fr = f.frontier(recs, [0.02, 0.05])["arms"]["var-free"]
    assert fr["step_ratio"]["values"] == pytest.approx([820 / 400, 236 / 120])
    assert fr["step_basis"] == "cpu+wall"
    # Without the default's point there is no target to judge against.
    del recs["alum-half-alpha"]
    assert f.frontier(recs, [0.02, 0.05])["verdicts"] == {}


def test_report_draws_the_frontier_from_the_records(study_module, tmp_path):
    from alum.finetune.frontier_figure import main as figure_main
    from alum.plotting import read_png_data

    study = _study(study_module, tmp_path, "--rule-with", "")
    runs = []
    for seed, (c, r1, r2, w, t) in enumerate([(.70, .50, .20, .30, 100.0),
                                             (.72, .54, .22, .34, 110.0),
                                             (.71, .52, .21, .30, 105.0)], start=1):
        runs.append(_rec("standard", seed, c, r1, r2, w, t))
        runs.append(_rec("alum-half-alpha", seed, c - .005, r1 + .08, r2 + .19, w + .02,
                         2.8 * t))
        runs.append(_rec("var-random", seed, c + .002 * seed, r1 + .03, r2 + .05 * seed, w,
                         (1.9 + .1 * seed) * t))
    runs.append(_rec("alum-paper", 1, .7, .5, .2, .3, 100.0))  # not a frontier recipe
    _write_records(study, runs)
    study.report(["standard"], [0.02, 0.05])
    data = read_png_data(str(tmp_path / "frontier.png"))
    assert data["panels"] == ["PGD r=0.02: gain over standard", "PGD r=0.05: gain over standard",
                              "DeepWordBug: gain over standard",
                              "clean accuracy: change against standard"]
    assert data["default"] == "alum-half-alpha"
    by_key = dict(zip(("r1", "r2", "word", "clean"), data["panels"]))
    std = {r["seed"]: r for r in runs if r["arm"] == "standard"}
    for arm in ("alum-half-alpha", "var-random"):
        mine = {r["seed"]: r for r in runs if r["arm"] == arm}
        ratios = [mine[s]["train_seconds"] / std[s]["train_seconds"] for s in (1, 2, 3)]
        for key, get in (("r1", lambda r: r["attacked"][0]), ("r2", lambda r: r["attacked"][1]),
                         ("word", lambda r: r["word"]["accuracy"]),
                         ("clean", lambda r: r["clean"])):
            diffs = [100 * (get(mine[s]) - get(std[s])) for s in (1, 2, 3)]
            point = data["points"][by_key[key]][arm]
            assert point["x"] == pytest.approx(statistics.mean(ratios))
            assert point["xerr"] == pytest.approx(statistics.stdev(ratios))
            assert point["y"] == pytest.approx(statistics.mean(diffs))
            assert point["yerr"] == pytest.approx(statistics.stdev(diffs))
            assert point["n"] == 3
    assert "alum-paper" not in data["points"][by_key["r1"]]
    assert data["target"]["max_step_ratio"] == 2.1
    assert data["target"]["gain_floor"] == pytest.approx(0.8 * 19.0)
    assert data["target"]["clean_band"] == pytest.approx([-1.0, 0.0])
    text = (tmp_path / "results.md").read_text()
    assert "| var-random | 3 | 2.10 ± 0.10 (wall) | +0.4 ± 0.2 | +3.0 ± 0.0 | +10.0 ± 5.0 |" in text
    assert "short: " in text and "frontier.png" in text
    stored = json.loads((tmp_path / "results.json").read_text())
    assert stored["default_rule"]["datasets"] == ["tweets"]
    # The figure's command-line entry point draws the same from results.json.
    assert figure_main([str(tmp_path / "results.json"), str(tmp_path / "again.png")]) == 0
    assert read_png_data(str(tmp_path / "again.png")) == data
    assert figure_main([str(tmp_path / "missing.json"), str(tmp_path / "x.png")]) == 2


def _point(n, ratio, clean, r1, r2, word):
    sp = lambda m: {"mean": m, "std": 0.0, "values": [m] * n}  # noqa: E731
    return {"n": n, "step_ratio": sp(ratio), "clean": sp(clean), "r1": sp(r1), "r2": sp(r2),
            "word": sp(word)}


def test_rule_counts_the_larger_radius_and_the_word_attack_on_every_set(frontier_module):
    f = frontier_module
    tweets = {"arms": {
        "standard": _point(5, 1.0, 0, 0, 0, 0),
        "alum-half-alpha": _point(5, 2.8, -.006, .075, .187, .016),
        "alum": _point(5, 2.8, -.009, .091, .267, .041),
        "alum-relative": _point(5, 2.8, -.029, .105, .342, .073),
        "var-free": _point(5, 1.9, -.004, .07, .17, .02),
        "var-rdrop": _point(2, 1.9, 0, .2, .2, .2)}}
    # On the second set the default buys nothing at the larger radius nor under the word
    # attack (the finding); alum at alpha 1 holds up.
    movies = {"arms": {
        "standard": _point(3, 1.0, 0, 0, 0, 0),
        "alum-half-alpha": _point(3, 2.9, -.003, .107, .002, .005),
        "alum": _point(3, 2.9, -.008, .12, .10, .06),
        "alum-relative": _point(3, 2.9, -.006, .15, .15, .11),
        "var-free": _point(3, 2.0, -.002, .10, .03, .01),
        "var-rdrop": _point(3, 1.9, 0, .2, .2, .2)}}
    choice = f.choose_default({"tweets": tweets, "rt-polarity": movies})
    rows = {r["arm"]: r for r in choice["candidates"]}
    assert choice["datasets"] == ["rt-polarity", "tweets"]
    assert choice["pick"] == "alum"
    assert rows["alum"]["score"] == pytest.approx(.041)
    assert rows["alum"]["worst"] == "word on tweets"
    assert rows["alum-half-alpha"]["score"] == pytest.approx(.002)
    assert rows["alum-half-alpha"]["worst"] == "r2 on rt-polarity"
    assert rows["alum-relative"]["excluded"].startswith("clean change below -1.0")
    assert rows["var-rdrop"]["excluded"] == "fewer than 3 paired seeds"
    assert "standard" not in rows
    # The cost bound and the tie: at most 2.5x, var-free is the only one left.
    tight = f.choose_default({"tweets": tweets, "rt-polarity": movies},
                             f.DefaultRule(max_step_ratio=2.5))
    assert tight["pick"] == "var-free"
    # Within the tie of the best score the cheaper recipe wins.
    movies["arms"]["var-free"] = _point(3, 2.0, -.002, .12, .10, .06)
    tweets["arms"]["var-free"] = _point(5, 1.9, -.004, .09, .26, .038)
    assert f.choose_default({"tweets": tweets, "rt-polarity": movies})["pick"] == "var-free"
    # A recipe missing on one data set is not a candidate; none eligible: no pick.
    del movies["arms"]["alum"]
    assert "alum" not in {r["arm"] for r in f.choose_default(
        {"tweets": tweets, "rt-polarity": movies})["candidates"]}
    assert f.choose_default({"tweets": tweets}, f.DefaultRule(min_seeds=9))["pick"] is None
    # Exactly one point below standard (a difference of two accuracies) is at the floor.
    tweets["arms"]["var-rdrop"] = _point(5, 1.9, .74 - .75, .2, .2, .2)
    movies["arms"]["var-rdrop"] = _point(3, 1.9, .74 - .75, .2, .2, .2)
    assert .74 - .75 < -.01
    assert f.choose_default({"tweets": tweets, "rt-polarity": movies})["pick"] == "var-rdrop"
    with pytest.raises(ValueError, match="DefaultRule.min_seeds"):
        f.DefaultRule(min_seeds=0)


def test_budget_picks_name_the_rules_pick_at_each_budget(frontier_module):
    f = frontier_module
    tweets = {"arms": {
        "standard": _point(3, 1.0, 0, 0, 0, 0),
        "alum-half-alpha": _point(3, 2.8, -.006, .075, .187, .016),
        "alum": _point(3, 2.9, -.009, .091, .267, .041),
        "alum-relative": _point(3, 2.8, -.029, .105, .342, .073),
        "var-free": _point(3, 2.0, -.004, .07, .17, .02),
        "var-rdrop": _point(2, 1.5, 0, .2, .2, .2)}}
    movies = {"arms": {a: _point(3, p["step_ratio"]["mean"], 0, .1, .1, .1)
                       for a, p in tweets["arms"].items()}}
    picks = f.budget_picks({"tweets": tweets, "rt-polarity": movies},
                           f.DefaultRule(max_step_ratio=2.5))
    # var-rdrop (two seeds) and alum-relative (clean -2.9) are never eligible; the default
    # scores less than var-free at a higher cost, so it is never picked.
    assert [(p["arm"], p["budget"], p["within_rule"]) for p in picks] == [
        ("var-free", 2.0, True), ("alum", 2.9, False)]
    assert picks[0]["score"] == pytest.approx(.02) and picks[1]["score"] == pytest.approx(.041)
    lines = "\n".join(f.budget_lines(picks))
    assert "| 2.00× to 2.90× | var-free | +2.0 | word on tweets | -0.4 |" in lines
    assert "| 2.90× and above (above the rule's bound) | alum | +4.1 |" in lines
    assert "Below 2.00× no eligible recipe" in lines
    assert "No recipe is eligible" in "\n".join(f.budget_lines([]))


def test_budget_picks_agree_with_the_rule_on_random_frontiers(frontier_module):
    f = frontier_module
    rng = random.Random(20261208)
    arms = [a for a in f.FRONTIER_ARMS if a != "standard"]
    # Coarse values, so that equal costs and near-ties (the rule's tie) are common.
    ratios, gains = [1.9, 2.0, 2.1, 2.8, 3.0, 3.6], [i * .003 for i in range(6)]
    for _ in range(300):
        frontiers, score = {}, {a: rng.choice(gains) for a in arms}
        for name in ("a", "b"):
            points = {"standard": _point(3, 1.0, 0, 0, 0, 0)}
            for arm in arms:
                if rng.random() < 0.95:
                    g = score[arm] + rng.choice([0, 0, .003])  # the arm's worst gain here
                    points[arm] = _point(rng.choice([2, 3, 5, 5, 5, 5]), rng.choice(ratios),
                                         rng.choice([-.02, -.005, 0, 0, 0, 0]),
                                         g, g + .01, g + .02)
            frontiers[name] = {"arms": points}
        rule = f.DefaultRule(max_step_ratio=rng.choice([2.1, 3.5]), tie=rng.choice([0, .005]))
        picks = f.budget_picks(frontiers, rule)
        assert [p["budget"] for p in picks] == sorted(p["budget"] for p in picks)
        assert all(p["within_rule"] == (p["budget"] <= rule.max_step_ratio) for p in picks)
        for budget in [x / 20 for x in range(20, 90)] + [p["budget"] for p in picks]:
            expect = f.choose_default(frontiers, replace(rule, max_step_ratio=budget))["pick"]
            reached = [p for p in picks if p["budget"] <= budget]
            assert (reached[-1]["arm"] if reached else None) == expect, budget


def test_report_applies_the_rule_over_both_data_sets(study_module, tmp_path, capsys):
    tweets_dir, movies_dir = tmp_path / "tweets", tmp_path / "movies"
    movies = _study(study_module, movies_dir, "--dataset", "rt-polarity")
    assert movies.args.train_examples == 3000 and movies.args.eval_examples == 1000
    for seed in (1, 2, 3):
        _write_records(movies, [
            _rec("standard", seed, .75, .60, .30, .40, 100.0, dataset="rt-polarity"),
            _rec("alum-half-alpha", seed, .75, .70, .31, .41, 280.0, dataset="rt-polarity"),
            _rec("alum", seed, .745, .72, .40, .45, 280.0, dataset="rt-polarity")])
    tweets = _study(study_module, tweets_dir, "--rule-with", str(movies_dir))
    for seed in (1, 2, 3):
        _write_records(tweets, [
            _rec("standard", seed, .70, .50, .20, .30, 100.0),
            _rec("alum-half-alpha", seed, .695, .58, .39, .32, 280.0),
            _rec("alum", seed, .692, .59, .47, .34, 280.0)])
    tweets.report(["standard"], [0.02, 0.05], final=True)
    out = capsys.readouterr().out
    assert "rule for the default (rt-polarity, tweets): picks alum\n" in out
    rule = json.loads((tweets_dir / "results.json").read_text())["default_rule"]
    rows = {r["arm"]: r for r in rule["candidates"]}
    assert rows["alum-half-alpha"]["score"] == pytest.approx(0.01)  # r2 on rt-polarity
    assert rows["alum"]["score"] == pytest.approx(0.04)  # word on tweets
    budgets = json.loads((tweets_dir / "results.json").read_text())["budget_picks"]
    assert [b["arm"] for b in budgets] == ["alum"]  # the default: same cost, lower score
    assert "| 2.80× and above | alum | +4.0 | word on tweets |" in (
        tweets_dir / "results.md").read_text()
    # The same folder twice, or a folder of this study's own data set, is an error.
    tweets.args.rule_with = f"{movies_dir},{movies_dir}"
    with pytest.raises(SystemExit, match="already counted"):
        tweets.report(["standard"], [0.02, 0.05])
    # A folder whose records mix data sets is named.
    _write_records(movies, [_rec("alum-paper", 1, .7, .5, .2, .3, 100.0)])
    tweets.args.rule_with = str(movies_dir)
    with pytest.raises(SystemExit, match="records of several data sets"):
        tweets.report(["standard"], [0.02, 0.05])


def test_data_sets_never_mix(study_module, tmp_path, monkeypatch):
    args = study_module.build_parser().parse_args(["--dataset", "rt-polarity"])
    study_module.resolve_defaults(args)
    assert args.output.endswith(os.path.join("results", "robustness_study_rt-polarity"))
    tweets_args = study_module.resolve_defaults(study_module.build_parser().parse_args([]))
    assert tweets_args.output.endswith(os.path.join("results", "robustness_study"))
    assert tweets_args.train_examples == 4000
    # A folder started on the tweets refuses another data set.
    _study(study_module, tmp_path / "a").save()
    with pytest.raises(SystemExit, match="this study is of data set 'tweets', not 'rt-polarity'"):
        _study(study_module, tmp_path / "a", "--dataset", "rt-polarity")
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "state.json").write_text(json.dumps({"radii": [0.02, 0.05]}))
    with pytest.raises(SystemExit, match="this study is of data set 'tweets'"):
        _study(study_module, tmp_path / "old", "--dataset", "rt-polarity")
    # A stray record of another set is named, not averaged in.
    movies = _study(study_module, tmp_path / "b", "--dataset", "rt-polarity")
    _write_records(movies, [_rec("standard", 1, .7, .5, .2, .3, 100.0)])  # a tweets record
    with pytest.raises(SystemExit, match="standard-seed1.json: a record of data set 'tweets'"):
        movies.report(["standard"], [0.02, 0.05])
    # New records carry their data set.
    model = tmp_path / "model"
    model.mkdir()
    (model / "alum_finetune.json").write_text(json.dumps({"train_seconds": 9.0, "steps": 3,
                                                          "train_cpu_seconds": 15.0}))
    monkeypatch.setattr(movies, "finetune", lambda arm, seed, base: str(model))
    monkeypatch.setattr(movies, "attack", lambda *a, **k: {"results": [
        {"attack": "none", "accuracy": 0.8, "examples": 10},
        {"attack": "pgd", "accuracy": 0.5, "examples": 10}]})
    movies.state["cpu_s"] = {"finetune alum seed 2": 17.5}
    record = movies.one_run("alum", 2, "minilm", [0.05])
    assert record["dataset"] == "rt-polarity" and record["command_cpu_seconds"] == 17.5
    assert record["train_cpu_seconds"] == 15.0


def test_stage_corpus_is_the_tweets_whatever_the_data_set(study_module, tmp_path):
    """The continual pre-training stages are shared by every study on the machine: a study
    of another data set builds the same corpus (the tweets' default training split, then
    news), not one from its own training text."""
    import csv

    from study_datasets import DATASETS

    corpora = {}
    for name in ("tweets", "rt-polarity"):
        study = _study(study_module, tmp_path / name, "--dataset", name, "--cpt-dir",
                       str(tmp_path / f"cpt-{name}"), "--news-articles", "3")
        study.split()
        corpora[name] = [json.loads(line)["text"] for line in
                         open(study.cpt.corpus(), encoding="utf-8")]
        if name == "rt-polarity":
            with open(study.train_csv, newline="", encoding="utf-8") as fh:
                own = {row["text"] for row in csv.DictReader(fh)}
    assert corpora["rt-polarity"] == corpora["tweets"]
    tweets = DATASETS["tweets"]
    assert len(corpora["tweets"]) == tweets.train_examples + 3
    assert not own & set(corpora["rt-polarity"])


def test_timed_records_the_commands_cpu_time(study_module, tmp_path):
    import sys

    study = _study(study_module, tmp_path)
    # A child that burns about 0.5 s of CPU, then sleeps 0.5 s (wall time, no CPU).
    burn = ("import time; t = time.process_time()\n"
            "while time.process_time() - t < 0.5: pass\n"
            "time.sleep(0.5)")
    study.timed("burn", lambda: study.sh([sys.executable, "-c", burn], "burn.log"))
    cpu, wall = study.state["cpu_s"]["burn"], study.state["wall_s"]["burn"]
    assert 0.45 <= cpu < wall
    assert wall >= 0.95


def _fake_stage_run(weights):
    """A stand-in for the study's ``sh`` running ``alum-pretrain``: writes the run's
    summary.json into ``--output-dir`` and, with ``--export-hf``, an export whose weights
    file holds the next bytes of ``weights``."""
    def sh(cmd, log):
        out = cmd[cmd.index("--output-dir") + 1]
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "summary.json"), "w") as fh:
            json.dump({"evals": [{"loss": 2.0, "accuracy": 0.1, "step": 0}], "end_step": 6,
                       "first_loss": 2.5, "last_loss": 2.0, "adv_means": {}}, fh)
        if "--export-hf" in cmd:
            export = cmd[cmd.index("--export-hf") + 1]
            os.makedirs(export)
            with open(os.path.join(export, "model.safetensors"), "wb") as fh:
                fh.write(next(weights))
    return sh


@pytest.mark.parametrize("cut_off", [False, True])
def test_stage_run_again_keeps_its_own_wall_time(study_module, tmp_path, monkeypatch, cut_off):
    """A stage run again from scratch (a fresh machine) records that run's wall and CPU
    times; the earlier run's are kept apart, not added to them, and a different model is
    named. Also when the new run was cut off once (its run folder exists: the earlier
    run's times are still not its own)."""
    study = _study(study_module, tmp_path / "s", "--cpt-dir", str(tmp_path / "cpt"))
    cpt = study.cpt
    monkeypatch.setattr(cpt, "data_prefix", lambda: str(tmp_path / "prefix"))
    monkeypatch.setattr(study, "sh", _fake_stage_run(iter([b"first model", b"second model"])))
    cpt.export("warmup")
    first = study.state["cpt_wall_s"]["warmup"]
    digest = study.state["cpt_stages"]["warmup"]["export_sha256"]
    assert study.state["cpt_cpu_s"]["warmup"] >= 0.0
    study.state["cpt_wall_s"]["warmup"] = 5000.0  # as if the first run had taken long
    study.state["cpt_cpu_s"]["warmup"] = 4000.0
    import shutil

    shutil.rmtree(tmp_path / "cpt" / "warmup")  # a fresh machine: the stage is gone
    if cut_off:  # the new run started, then stopped before its end
        (tmp_path / "cpt" / "warmup" / "run").mkdir(parents=True)
    cpt.export("warmup")
    assert first < 60
    assert study.state["cpt_wall_s"]["warmup"] < 60
    assert study.state["cpt_wall_s_previous"]["warmup"] == [5000.0]
    assert study.state["cpt_cpu_s_previous"]["warmup"] == [4000.0]
    assert study.state["cpt_cpu_s"]["warmup"] < 60
    entry = study.state["cpt_stages"]["warmup"]
    assert entry["export_sha256_previous"] == [digest] and entry["export_sha256"] != digest


def test_stage_another_study_ran_is_the_one_recorded(study_module, tmp_path, monkeypatch):
    """The stages are shared by the studies on a machine: when another study made the
    stage's model after this study's state recorded a run on another machine, the state
    (and so every record fine-tuned from it) names the model on disk, keeps the old digest
    apart and moves the old run's times aside."""
    import shutil

    import study_cpt

    study = _study(study_module, tmp_path / "s", "--cpt-dir", str(tmp_path / "cpt"))
    cpt = study.cpt
    monkeypatch.setattr(cpt, "data_prefix", lambda: str(tmp_path / "prefix"))
    monkeypatch.setattr(study_cpt, "graft_pooler",
                        lambda original, exported, target: os.makedirs(target))
    fake_sh = _fake_stage_run(itertools.repeat(b"this study's model, another machine"))
    monkeypatch.setattr(study, "sh", fake_sh)
    cpt.model("warmup")
    old = study.state["cpt_stages"]["warmup"]["export_sha256"]
    old_wall = study.state["cpt_wall_s"]["warmup"]
    # A fresh machine: the stage is gone; another study runs it again (same cpt dir).
    shutil.rmtree(tmp_path / "cpt" / "warmup")
    export = tmp_path / "cpt" / "warmup" / "export"
    export.mkdir(parents=True)
    (export / "model.safetensors").write_bytes(b"the other study's model")
    for part in ("before", "run"):
        fake_sh(["--output-dir", str(tmp_path / "cpt" / "warmup" / part)], "x.log")
    cpt.model("warmup")
    entry = study.state["cpt_stages"]["warmup"]
    assert entry["export_sha256"] == study_cpt.export_digest(str(export)) != old
    assert entry["export_sha256_previous"] == [old]
    assert study.state["cpt_wall_s_previous"]["warmup"] == [old_wall]
    assert "warmup" not in study.state["cpt_wall_s"] and entry["wall_s"] is None
    cpt.model("warmup")  # the same model again: nothing more is moved aside
    assert study.state["cpt_stages"]["warmup"]["export_sha256_previous"] == [old]


def test_stage_fine_tuned_checks_the_stage_it_started_from(study_module, tmp_path,
                                                           monkeypatch):
    """Fine-tuning a stage checks the digests of the stages below it too: the head
    warm-up another study ran again on this machine is the one the state names."""
    import study_cpt

    study = _study(study_module, tmp_path / "s", "--cpt-dir", str(tmp_path / "cpt"))
    cpt = study.cpt
    monkeypatch.setattr(study_cpt, "graft_pooler",
                        lambda original, exported, target: os.makedirs(target))
    for stage, weights in (("warmup", b"warm-up, this machine"), ("standard", b"standard")):
        d = tmp_path / "cpt" / stage
        run = _fake_stage_run(iter([weights]))
        run(["--output-dir", str(d / "before")], "before.log")
        run(["--output-dir", str(d / "run"), "--export-hf", str(d / "export")], "run.log")
    study.state["cpt_stages"] = {"warmup": {"export_sha256": "another machine's"}}
    study.state["cpt_wall_s"] = {"warmup": 1142.0}
    cpt.model("standard")
    warm = study.state["cpt_stages"]["warmup"]
    assert warm["export_sha256"] == study_cpt.export_digest(
        str(tmp_path / "cpt" / "warmup" / "export"))
    assert warm["export_sha256_previous"] == ["another machine's"]
    assert study.state["cpt_wall_s_previous"]["warmup"] == [1142.0]
    assert study.state["cpt_stages"]["standard"]["export_sha256"] == study_cpt.export_digest(
        str(tmp_path / "cpt" / "standard" / "export"))
