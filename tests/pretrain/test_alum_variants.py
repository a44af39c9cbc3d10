"""ALUM's cheaper variants in the pre-training orders (alum.pretrain.alum_variants): the
lean order gives the fast order's gradients for each, the batch fraction's term is the
whole-batch term of its first sequences, the free direction's gradient equals a reference
written here, the passes each runs, and the layouts that refuse them."""
import pytest
import torch

from alum import AlumConfig
from alum.perturbation import adv_project, embedding_scale
from alum.pretrain.config import PretrainConfig, TrainConfig
from alum.pretrain.lean_order import lean_micro_batch
from alum.pretrain.mlm_step import mlm_micro_batch, module_runner

from .conftest import tiny_config
from .test_alum_orders import _batch, _grads, tiny_bert  # noqa: F401 (fixture)
from .test_training import RELATIVE


def _fast(model, batch, alum, positions="masked"):
    model.zero_grad(set_to_none=True)
    result = mlm_micro_batch(model, batch, alum, alum is not None, positions, run_seed=11)
    result.loss.backward()
    return result, _grads(model)


def _lean(model, batch, alum, positions="masked"):
    model.zero_grad(set_to_none=True)
    result = lean_micro_batch(module_runner(model), batch, alum, True, positions, run_seed=11)
    return result, _grads(model)


def _count_passes(model):
    calls = []
    real = model.forward_from_embeddings

    def counted(*args, **kwargs):
        calls.append(args[0].shape[0] if args[0] is not None else None)
        return real(*args, **kwargs)
    model.forward_from_embeddings = counted
    return calls


CASES = [("none", 1.0, "masked"), ("random", 1.0, "masked"), ("random", 1.0, "all"),
         ("ascent", 0.5, "masked"), ("ascent", 0.5, "all"), ("none", 0.3, "masked")]


@pytest.mark.parametrize("direction, fraction, positions", CASES)
def test_lean_order_gives_the_fast_order_gradients(tiny_bert, direction, fraction, positions):
    """With dropout on (``none`` compares two dropout passes): both orders draw the clean
    pass's masks, then the ascent's, then the perturbed pass's (the lean order replays the
    clean ones for its last pass), so from one generator state they agree."""
    from alum.pretrain.checkpoint import capture_rng_state, restore_rng_state

    model = tiny_bert(dropout=0.1)
    batch = _batch(b=4)
    alum = AlumConfig(**RELATIVE, direction=direction, fraction=fraction)
    calls = _count_passes(model)
    state = capture_rng_state()
    fast, g_fast = _fast(model, batch, alum, positions)
    n = alum.adversarial_rows(4)
    # The perturbed passes (ascent, final) run on the first n sequences alone; none and
    # random run no ascent pass.
    assert calls == [4] + [n] * (1 + alum.ascent_steps)
    restore_rng_state(state)
    lean, g_lean = _lean(model, batch, alum, positions)
    assert not fast.adv.skipped and not lean.adv.skipped and float(fast.adv.adv_loss) > 0
    assert float(lean.adv.adv_loss) == pytest.approx(float(fast.adv.adv_loss), rel=1e-5)
    for name, g in g_fast.items():
        torch.testing.assert_close(g_lean[name], g, rtol=1e-5, atol=1e-7, msg=name)


@pytest.mark.parametrize("positions", ["masked", "all"])
def test_fraction_is_the_term_of_the_first_sequences(tiny_bert, positions):
    """fraction 0.5 on 4 sequences = the MLM loss of all 4 + the term of the first 2 alone,
    in value and in gradient (dropout off, the same per-sample random starts)."""
    model = tiny_bert()
    batch = _batch(b=4, seed=3)
    first = {k: v[:2] for k, v in batch.items()}
    alum = AlumConfig(**RELATIVE)
    part, g_part = _fast(model, batch, alum.replace(fraction=0.5), positions)
    sub, g_sub = _fast(model, first, alum, positions)
    _, g_sub_mlm = _fast(model, first, None, positions)
    _, g_mlm = _fast(model, batch, None, positions)
    assert float(part.adv.adv_loss) == pytest.approx(float(sub.adv.adv_loss), rel=1e-6)
    for name, g in g_part.items():
        want = g_mlm[name] + (g_sub[name] - g_sub_mlm[name])
        torch.testing.assert_close(g, want, rtol=1e-4, atol=1e-6, msg=name)


def _kl(p_logits, q_logits):
    lp, lq = torch.log_softmax(p_logits.double(), -1), torch.log_softmax(q_logits.double(), -1)
    return (lp.exp() * (lp - lq)).sum(-1)


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_free_direction_matches_a_reference(tiny_bert, fraction):
    """MLM + α·D_sym(f(x+δ), stopgrad f(x)), δ = Π(η·g/‖g‖) with g the MLM loss's gradient
    at the embedding output; two forward passes (the loop runs these whatever the order:
    PretrainConfig.resolved_alum_order)."""
    model = tiny_bert()
    batch = _batch(b=4, seed=5)
    alum = AlumConfig(**RELATIVE, direction="free", fraction=fraction)
    n = alum.adversarial_rows(4)
    rows = batch["labels"].ne(-100)
    model.zero_grad(set_to_none=True)
    def clean_pass():
        embeds = model.embed(batch["input_ids"], batch["token_type_ids"])
        logits = model.forward_from_embeddings(embeds, batch["attention_mask"], rows)
        return embeds, logits, model.mlm_loss(logits, batch["labels"][rows])

    # megatron's cross entropy reuses its saved softmax in its backward: a graph per use.
    embeds, _, mlm = clean_pass()
    (g,) = torch.autograd.grad(mlm, embeds)
    embeds, logits, mlm = clean_pass()
    mask = batch["attention_mask"][:n]
    e = embeds[:n].detach()
    delta = adv_project(torch.zeros_like(e), g[:n], alum, mask, embedding_scale(e, alum, mask))
    adv = model.forward_from_embeddings(e + delta, mask, rows[:n])
    clean = logits[:int(rows[:n].sum())].detach()
    term = (_kl(clean, adv) + _kl(adv.detach(), clean)).mean()
    (mlm + alum.alpha * term).backward()
    want = _grads(model)

    calls = _count_passes(model)
    got, g_got = _lean(model, batch, alum)
    assert calls == [4, n]  # the clean pass and the perturbed one: no ascent pass
    assert float(got.adv.adv_loss) == pytest.approx(float(term.detach()), rel=1e-6)
    assert float(got.adv.grad_share) == pytest.approx(1.0)
    for name, w in want.items():
        torch.testing.assert_close(g_got[name], w, rtol=1e-4, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="free_micro_batch"):
        mlm_micro_batch(model, batch, alum, True)


def test_variants_under_pipeline_parallelism_are_refused_or_accepted_at_config_time():
    pp = TrainConfig(pipeline_parallel_size=2)
    with pytest.raises(ValueError, match=r"AlumConfig.direction='free'.*pipeline_parallel"):
        PretrainConfig(train=pp, alum=AlumConfig(direction="free"))
    with pytest.raises(ValueError, match=r"AlumConfig.fraction=0.5.*pipeline_parallel"):
        PretrainConfig(train=pp, alum=AlumConfig(fraction=0.5))
    for direction in ("none", "random"):  # the pipeline's passes with K = 0
        PretrainConfig(train=pp, alum=AlumConfig(direction=direction))
    PretrainConfig(train=TrainConfig(tensor_parallel_size=2, sequence_parallel=True),
                   alum=AlumConfig(direction="free", fraction=0.5))


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_free_and_fraction_train_alike_under_each_zero_stage(tmp_path, sample_cache, stage):
    """The free direction's two backward passes per micro-batch and the fraction's partial
    batch through the DeepSpeed engine: ZeRO 2/3 give ZeRO-1's run."""
    from alum.pretrain import Trainer

    results = {}
    for ds in ("zero1", stage):
        kw = dict(steps=3, grad_accum=2, layers=2, ds_config=ds,
                  alum=AlumConfig(start_step=1, **RELATIVE, direction="free", fraction=0.5))
        cfg = tiny_config(tmp_path / ds, sample_cache, **kw)
        assert cfg.alum_order == "auto" and cfg.resolved_alum_order == "lean"  # its own passes
        results[ds] = Trainer(cfg).train()
    ref, got = results["zero1"], results[stage]
    assert ref.alum_steps == got.alum_steps == 2 and ref.adv_means["adv_loss"] > 0
    assert got.losses == pytest.approx(ref.losses, abs=1e-5)
    assert got.adv_means["adv_loss"] == pytest.approx(ref.adv_means["adv_loss"], rel=1e-4)


@pytest.mark.parametrize("direction", ["random", "free"])
def test_resume_gives_the_uninterrupted_run(tmp_path, sample_cache, direction):
    """Dropout on, ALUM from step 2, half of each micro-batch: the variants draw nothing
    outside the per-sample starts, so a resumed run is the uninterrupted one."""
    from alum.pretrain import Trainer

    kw = dict(steps=5, dropout=0.1, grad_accum=2,
              alum=AlumConfig(start_step=2, **RELATIVE, direction=direction, fraction=0.5))
    straight = Trainer(tiny_config(tmp_path / "straight", sample_cache, **kw)).train()
    first = Trainer(tiny_config(tmp_path / "split", sample_cache, max_steps=3, **kw)).train()
    second = Trainer(tiny_config(tmp_path / "split", sample_cache, resume="auto", **kw)).train()
    assert second.start_step == 3 and straight.alum_steps == 3
    assert first.losses + second.losses == pytest.approx(straight.losses, abs=1e-6)


def test_fraction_whose_sequences_predict_nothing_is_a_standard_step(tiny_bert):
    """fraction 0.25 of 4 sequences is the first one; with no masked position there, the
    micro-batch has no term in either order and its gradient is the MLM loss's."""
    model = tiny_bert()
    batch = _batch(b=4, seed=2)
    batch["labels"][0] = -100
    alum = AlumConfig(**RELATIVE, fraction=0.25)
    _, g_mlm = _fast(model, batch, None)
    for run in (_fast, _lean):
        result, g = run(model, batch, alum)
        assert result.adv is None
        for name, want in g_mlm.items():
            torch.testing.assert_close(g[name], want, rtol=1e-6, atol=1e-8, msg=name)
