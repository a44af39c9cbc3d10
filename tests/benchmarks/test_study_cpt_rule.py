"""The rule for the pre-training default (benchmarks/study_cpt_rule.py): eligibility on
every data set, the score averaged over data sets, the tie decided by the flip check, the
R-Drop control, and the report that writes it."""
import json

import pytest

from . import load_script
from .test_robustness_study import _record, _write_records

ACTS = {"alum": 0.45, "dropout": 0.28}   # δ flips more than dropout alone
INERT = {"alum": 0.18, "dropout": 0.21}  # no more than dropout: R-Drop at ALUM's price


@pytest.fixture(scope="module")
def rule_module():
    load_script("robustness_study")  # puts benchmarks/ on sys.path
    return load_script("study_cpt_rule")


def _cells(arm, rows, base=None):
    """Records of ``arm`` from (seed, clean, r1, r2, word) rows; with ``base``, each value
    is base's at the same seed plus the row's change (in points)."""
    out = {}
    for seed, clean, r1, r2, word in rows:
        b = base[seed] if base else None
        vals = [clean, r1, r2, word]
        if b:
            vals = [b["clean"] + clean / 100, b["attacked"][0] + r1 / 100,
                    b["attacked"][1] + r2 / 100, b["word"]["accuracy"] + word / 100]
        out[seed] = _record(arm, seed, *vals, 100.0)
    return out


def _set(relative, paper, rdrop=None, seeds=(1, 2, 3)):
    """One data set's records: cpt-standard, and the stages' changes against it per seed
    (lists of (clean, r1, r2, word) in points)."""
    base = _cells("cpt-standard", [(s, .70 + .01 * s, .50, .25 + .01 * s, .20) for s in seeds])
    recs = {"cpt-standard": base,
            "cpt-relative": _cells("cpt-relative", [(s, *relative[i]) for i, s in
                                                    enumerate(seeds)], base),
            "cpt-paper": _cells("cpt-paper", [(s, *paper[i]) for i, s in enumerate(seeds)],
                                base)}
    if rdrop:
        recs["cpt-rdrop"] = _cells("cpt-rdrop", [(s, *rdrop[i]) for i, s in
                                                 enumerate(seeds)], base)
    return recs


def test_the_larger_score_over_both_sets_wins_when_the_difference_is_clear(rule_module):
    relative = [(0, 1, 6, 0), (0, 1, 7, 0), (0, 1, 8, 0)]
    paper = [(0, 1, 1, 0), (0, 1, 2, 0), (0, 1, 1, 0)]
    recs = {"tweets": _set(relative, paper),
            "rt-polarity": _set([(0, 1, 4, 0)] * 3, [(0, 1, 3, 0)] * 2 + [(0, 1, 2, 0)])}
    c = rule_module.choose_pretrain_preset(recs, {"relative": INERT, "paper": ACTS},
                                           ["rt-polarity", "tweets"])
    rows = {r["stage"]: r for r in c["candidates"]}
    # Scores: the larger-radius gain averaged over the two sets.
    assert rows["relative"]["score"] == pytest.approx(((6 + 7 + 8) / 3 + 4) / 2 / 100)
    assert rows["paper"]["score"] == pytest.approx(((1 + 2 + 1) / 3 + 8 / 3) / 2 / 100)
    # Beyond one std, so no tie: the flip check (here against relative) does not decide.
    assert c["tie"]["tied"] is False
    assert c["pick"] == "relative" and c["pick_stage"] == "relative"


def test_a_tie_goes_to_the_stage_whose_perturbation_acts(rule_module):
    relative = [(0, 1, 3, 0), (0, 1, 4, 0), (0, 1, 2, 0)]
    paper = [(0, 1, 5, 0), (0, 1, 1, 0), (0, 1, 4, 0)]  # higher mean, noisy difference
    recs = {"tweets": _set(relative, paper)}
    flips = {"relative": ACTS, "paper": INERT}
    c = rule_module.choose_pretrain_preset(recs, flips, ["tweets"])
    assert c["tie"]["stages"] == ["paper", "relative"] and c["tie"]["tied"]
    assert c["pick"] == "relative"
    # The same scores with neither perturbation acting: the higher score keeps it.
    c = rule_module.choose_pretrain_preset(recs, {"relative": INERT, "paper": INERT},
                                           ["tweets"])
    assert c["pick"] == "paper-pretrain"


def test_eligibility_counts_every_data_set(rule_module):
    good = [(0, 1, 5, 1)] * 3
    # Clean below -1.0 point on one set excludes the stage, whatever its score.
    low_clean = _set([(-2, 1, 9, 1), (-1.5, 1, 9, 1), (-1.2, 1, 9, 1)], good)
    c = rule_module.choose_pretrain_preset({"tweets": _set(good, [(0, 1, 2, 1)] * 3),
                                            "rt-polarity": low_clean},
                                           {}, ["rt-polarity", "tweets"])
    rows = {r["stage"]: r for r in c["candidates"]}
    assert rows["relative"]["excluded"] == "clean change below -1.0 points on rt-polarity"
    assert rows["paper"]["excluded"] is None and c["pick"] == "paper-pretrain"
    # DeepWordBug negative beyond one std on a set excludes it too; within one std not.
    word_down = _set([(0, 1, 9, -3), (0, 1, 9, -4), (0, 1, 9, -3)],
                     [(0, 1, 2, -1), (0, 1, 2, 1), (0, 1, 2, -2)])
    rows = {r["stage"]: r for r in rule_module.choose_pretrain_preset(
        {"tweets": word_down}, {}, ["tweets"])["candidates"]}
    assert rows["relative"]["excluded"] == "word negative beyond one std on tweets"
    assert rows["paper"]["excluded"] is None
    # A required data set without records: no pick yet, every stage says which set.
    c = rule_module.choose_pretrain_preset({"tweets": _set(good, good)}, {},
                                           ["rt-polarity", "tweets"])
    assert c["pick"] is None and c["missing"] == ["rt-polarity"]
    assert all(r["excluded"] == "no cpt-standard records on rt-polarity yet"
               for r in c["candidates"])
    # Too few seeds.
    two = _set(good[:2], good[:2], seeds=(1, 2))
    c = rule_module.choose_pretrain_preset({"tweets": two}, {}, ["tweets"])
    assert c["pick"] is None
    assert c["candidates"][0]["excluded"] == "fewer than 3 paired seeds on some data set"


def test_the_rdrop_control_is_reported(rule_module):
    relative = [(0, 1, 6, 0), (0, 1, 7, 0), (0, 1, 8, 0)]
    paper = [(0, 1, 3, 0), (0, 1, 2, 0), (0, 1, 4, 0)]
    rdrop = [(0, 0, 3, 0), (0, 0, 2, 0), (0, 0, 4, 0)]
    c = rule_module.choose_pretrain_preset({"tweets": _set(relative, paper, rdrop)},
                                           {"relative": ACTS}, ["tweets"])
    rows = {r["stage"]: r for r in c["candidates"]}
    assert rows["relative"]["vs_rdrop"]["tweets"]["mean"] == pytest.approx(0.04)
    assert rows["relative"]["vs_rdrop"]["tweets"]["beyond_one_std"]
    assert not rows["paper"]["vs_rdrop"]["tweets"]["beyond_one_std"]  # equal to R-Drop
    text = "\n".join(rule_module.pretrain_rule_lines(c))
    assert "| relative (relative) | tweets | 3 |" in text and "(beyond 1 std)" in text
    assert "No ALUM stage beats the R-Drop stage" not in text
    # Neither beats it: the report says so.
    c = rule_module.choose_pretrain_preset({"tweets": _set(paper, paper, rdrop)}, {},
                                           ["tweets"])
    assert "No ALUM stage beats the R-Drop stage (δ = 0) beyond one std" in "\n".join(
        rule_module.pretrain_rule_lines(c))


def test_report_applies_the_rule_over_the_study_folders(rule_module, tmp_path, capsys):
    study_module = load_script("robustness_study")
    tweets = study_module.Study(study_module.build_parser().parse_args(
        ["--output", str(tmp_path / "tweets")]))
    movies = study_module.Study(study_module.build_parser().parse_args(
        ["--output", str(tmp_path / "movies"), "--dataset", "rt-polarity"]))
    good, weak = [(0, 1, 6, 1)] * 2 + [(0, 1, 5, 1)], [(0, 1, 1, 1)] * 2 + [(0, 1, 2, 1)]
    for study, name in ((tweets, "tweets"), (movies, "rt-polarity")):
        recs = _set(good, weak)
        _write_records(study, [dict(r, dataset=name) for by_seed in recs.values()
                               for r in by_seed.values()])
    evals = {"before": {"loss": 6.8, "accuracy": 0.1}, "after": {"loss": 5.2, "accuracy": 0.2},
             "steps": 1000, "wall_s": 600.0}
    tweets.state["cpt_stages"] = {"relative": dict(evals, flip_check=ACTS),
                                  "paper": dict(evals, flip_check=INERT)}
    tweets.args.rule_with = str(tmp_path / "movies")
    tweets.report(["cpt-standard", "cpt-relative", "cpt-paper"], [0.02, 0.05], final=True)
    assert "rule for the pre-training default: picks relative" in capsys.readouterr().out
    text = (tmp_path / "tweets" / "results.md").read_text()
    assert "Rule for the pre-training default over rt-polarity, tweets" in text
    assert "| paper (paper-pretrain) | rt-polarity | 3 |" in text
    saved = json.loads((tmp_path / "tweets" / "results.json").read_text())["pretrain_rule"]
    assert saved["pick"] == "relative" and saved["datasets"] == ["rt-polarity", "tweets"]
