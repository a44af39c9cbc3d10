"""Every ALUM variant under every pre-training layout (the matrix: docs/algorithm.md,
"Cheaper variants"): direction {ascent, none, random, free} x fraction {1, 0.5} x order
{fast, lean} x layout {DP=2, TP=2, TP=2 + SP, PP=2}. Each cell is either refused at config
time with a message naming the field and the layout (in-process, seconds), or trained over
two gloo processes and equal to its own TP=1/DP=1 run (slow, a launch per layout): the
losses and the validation loss to 1e-5, the adversarial loss and the flip rate to 1e-4 relative, the
δ statistics to 1e-4 where they are not per-shard means (sequence parallel). The cells
that tests/pretrain/test_alum_parallel.py runs (Algorithm 1 on the whole batch) are not
run again here.

Randomness: δ's random start is drawn per sample (alum.pretrain.alum_layout), the same on
every layout, and the fraction takes the first sequences of each micro-batch, which the
layouts share; dropout is off, except for ``none`` under TP=2 (below)."""
import itertools
from typing import Dict, Optional, Tuple

import pytest

from alum import AlumConfig
from alum.pretrain import Trainer
from alum.pretrain.config import PretrainConfig

from .conftest import tiny_config
from .test_tensor_parallel import _launch, _run
from .test_training import RELATIVE
from .tp_worker import hidden_dropout_only

DIRECTIONS = ("ascent", "none", "random", "free")
FRACTIONS = (1.0, 0.5)
ORDERS = ("fast", "lean")
LAYOUTS: Dict[str, dict] = {  # the train section of each two-process layout
    # DP=2 takes one micro-batch per rank where TP=1 accumulates two (the same global
    # batch), and validates half the batches per rank (the same validation samples).
    "dp2": {"grad_accum_steps": 1, "eval_batches": 1},
    "tp2": {"tensor_parallel_size": 2},
    # ZeRO-2, so the sequence-parallel gradient hooks meet DeepSpeed's own.
    "tp2_sp": {"tensor_parallel_size": 2, "sequence_parallel": True, "ds_config": "zero2"},
    "pp2": {"pipeline_parallel_size": 2},
}
CELLS = list(itertools.product(DIRECTIONS, FRACTIONS, ORDERS, LAYOUTS))
# Run by tests/pretrain/test_alum_parallel.py, against the same kind of reference.
COVERED_ELSEWHERE = {("ascent", 1.0, "fast", "tp2"), ("ascent", 1.0, "lean", "tp2_sp"),
                     ("ascent", 1.0, "fast", "dp2"), ("ascent", 1.0, "lean", "dp2"),
                     ("ascent", 1.0, "lean", "pp2")}
# With dropout off, δ = 0 leaves the perturbed pass equal to the clean one: the term is 0.
# Under TP=2 without sequence parallelism the hidden dropout draws TP=1's masks
# (tp_worker.hidden_dropout_only), so there the two passes differ and the term is tested.
NONE_DROPOUT = 0.1


def expected_refusal(direction: str, fraction: float, order: str, layout: str
                     ) -> Optional[str]:
    """The field a cell's config names when it is refused (the first check that fails);
    None when it runs. All refusals are the pipeline's (docs/alum_parallel.md)."""
    if layout != "pp2":
        return None
    if order == "fast":  # the pipeline runs ALUM in the lean order only ('auto' picks it)
        return "PretrainConfig.alum_order='fast'"
    if direction == "free":  # no clean backward before the perturbed pass
        return "AlumConfig.direction='free'"
    if fraction < 1.0:  # the pipeline's passes run whole micro-batches
        return "AlumConfig.fraction=0.5"
    return None


def _alum(direction: str, fraction: float) -> AlumConfig:
    return AlumConfig(start_step=0, **RELATIVE, direction=direction, fraction=fraction)


def _dropout(direction: str, layout: str) -> float:
    return NONE_DROPOUT if direction == "none" and layout == "tp2" else 0.0


def _reference_config(path, cache, direction: str, fraction: float, dropout: float
                      ) -> PretrainConfig:
    # Two ALUM steps: the second step's loss and statistics, and the validation at the
    # end, follow the updates that the term changed.
    cfg = tiny_config(path, cache, steps=2, grad_accum=2, hidden=64, layers=2,
                      dropout=dropout, alum=_alum(direction, fraction))
    cfg.train.eval_batches = 2
    return cfg


def _cell_config(direction: str, fraction: float, order: str, layout: str,
                 tmp_path) -> PretrainConfig:
    """The cell's config, as the launch builds it (raises ValueError when refused)."""
    values = _reference_config(tmp_path, str(tmp_path), direction, fraction, 0.0).to_dict()
    values["train"].update(LAYOUTS[layout])
    values["alum_order"] = order
    return PretrainConfig.from_dict(values)


@pytest.mark.parametrize("direction, fraction, order, layout", CELLS)
def test_each_cell_runs_or_is_refused_at_config_time(tmp_path, direction, fraction, order,
                                                     layout):
    """The refusals are exactly the pipeline's three (the fast order, the free direction,
    a fraction below 1), each one line naming the field and the layout; the free direction
    has one order, its own two passes, whatever ``alum_order`` says."""
    refusal = expected_refusal(direction, fraction, order, layout)
    if refusal is not None:
        with pytest.raises(ValueError) as raised:
            _cell_config(direction, fraction, order, layout, tmp_path)
        message = str(raised.value)
        assert message.startswith(refusal) and "pipeline" in message, message
        assert "\n" not in message
        return
    cfg = _cell_config(direction, fraction, order, layout, tmp_path)
    want = "lean" if direction == "free" else order
    assert cfg.resolved_alum_order == want


def _runs_here(layouts=tuple(LAYOUTS)) -> Dict[str, Tuple[str, float, str, str]]:
    """The supported cells of ``layouts`` that this file trains, by run name: one run per
    distinct computation (the free direction's fast cell is its lean cell), without the
    cells test_alum_parallel.py trains."""
    runs = {}
    for direction, fraction, order, layout in CELLS:
        if layout not in layouts:
            continue
        if expected_refusal(direction, fraction, order, layout) is not None:
            continue
        if direction == "free" and order == "fast":  # the same run as its lean cell
            continue
        if (direction, fraction, order, layout) in COVERED_ELSEWHERE:
            continue
        runs[f"{direction}_{fraction:g}_{order}_{layout}"] = (direction, fraction, order,
                                                              layout)
    return runs


@pytest.fixture(scope="module")
def single_rank_runs(tmp_path_factory, sample_cache):
    """The TP=1/DP=1 run (fast order) of each (direction, fraction, dropout), trained in
    this process when a launch first needs it."""
    done = {}

    def get(direction: str, fraction: float, dropout: float):
        key = (direction, fraction, dropout)
        if key not in done:
            path = tmp_path_factory.mktemp("ref_{}_{:g}_{:g}".format(*key))
            with hidden_dropout_only():  # as the launch's runs with dropout draw it
                done[key] = Trainer(_reference_config(path, sample_cache, *key)).train()
            ref = done[key]
            if direction == "none" and dropout == 0.0:  # δ = 0, no dropout: no term
                assert ref.adv_means["adv_loss"] == pytest.approx(0.0, abs=1e-9)
            else:  # a term to compare
                assert ref.adv_means["adv_loss"] > 1e-6, key
        return done[key]
    return get


def _assert_same_as_reference(got: dict, want, name: str, layout: str) -> None:
    assert got["world"] == 2 and got["dp_size"] == (2 if layout == "dp2" else 1), name
    assert got["adv_skipped"] == 0 and got["alum_steps"] == want.alum_steps == 2, name
    assert got["losses"] == pytest.approx(want.losses, abs=1e-5), name
    assert got["valid"]["loss"] == pytest.approx(want.evals[-1]["loss"], abs=1e-5), name
    keys = ["adv_loss", "flip_rate"]
    if layout != "tp2_sp":  # per-rank shard means under sequence parallel
        keys += ["delta_rel_norm", "cos_delta_grad", "grad_share"]
    for key in keys:
        if want.adv_means[key] is None:
            assert got["adv"][key] is None, (name, key)
        else:
            assert got["adv"][key] == pytest.approx(want.adv_means[key], rel=1e-4, abs=1e-7), \
                (name, key)


# One launch per group (each about a dozen runs), so that a launch stays within its
# time limit on a busy machine.
LAUNCHES = {"dp2_pp2": (("dp2", "pp2"), 29657), "tp2": (("tp2",), 29658),
            "tp2_sp": (("tp2_sp",), 29659)}


@pytest.mark.slow
@pytest.mark.parametrize("group", LAUNCHES)
def test_every_supported_cell_equals_its_single_rank_run(tmp_path, sample_cache,
                                                         single_rank_runs, group):
    layouts, port = LAUNCHES[group]
    runs = _runs_here(layouts)
    out = tmp_path / "runs"
    plan = []
    for name, (direction, fraction, order, layout) in runs.items():
        single_rank_runs(direction, fraction, _dropout(direction, layout))
        run = _run(name, out, train=LAYOUTS[layout], alum_order=order,
                   alum={"direction": direction, "fraction": fraction},
                   model={"dropout": _dropout(direction, layout)})
        if direction == "none" and layout == "tp2":
            run["attention_dropout"] = 0.0
        plan.append(run)
    base = _reference_config(tmp_path / "base", sample_cache, "ascent", 1.0, 0.0)
    results = _launch(tmp_path, 2, port, base, plan)
    assert set(results) == set(runs)
    for name, (direction, fraction, order, layout) in runs.items():
        want = single_rank_runs(direction, fraction, _dropout(direction, layout))
        _assert_same_as_reference(results[name], want, name, layout)


def test_the_launches_train_every_supported_cell_once():
    """Every cell that is not refused is trained once: here, or by test_alum_parallel.py,
    or as the same run as another cell (the free direction's fast order)."""
    here = [cell for layouts, _ in LAUNCHES.values() for cell in _runs_here(layouts).values()]
    assert len(here) == len(set(here)) == len(_runs_here())
    for direction, fraction, order, layout in CELLS:
        if expected_refusal(direction, fraction, order, layout) is not None:
            continue
        trained_as = (direction, fraction, "lean" if direction == "free" else order, layout)
        assert (trained_as in here) != (trained_as in COVERED_ELSEWHERE), trained_as
