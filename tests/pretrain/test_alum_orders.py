"""ALUM's two orders (docs/algorithm.md, "Cost model"): the lean order (one graph at a time)
gives the fast order's gradients, replays the clean pass's randomness, and trains to the
same losses under ZeRO 1/2/3; the per-sample random start is layout-independent."""
import pytest
import torch

from alum import AlumConfig
from alum.pretrain.config import ModelChoice, PretrainConfig, TrainConfig
from alum.pretrain.lean_order import lean_micro_batch
from alum.pretrain.mlm_step import module_runner
from alum.pretrain.mlm_step import mlm_micro_batch

from .conftest import tiny_config
from .test_training import RELATIVE, run


@pytest.fixture(scope="module")
def tiny_bert():
    from alum.parallel import initialize_parallel
    from alum.pretrain.model_builder import build_megatron_bert

    initialize_parallel(1, 1, seed=3)

    def build(dropout=0.0):
        return build_megatron_bert(ModelChoice(hidden_size=32, num_layers=2, dropout=dropout),
                                   vocab_size=101, pad_token_id=0, seq_length=12)
    return build


def _batch(seed=0, b=3, s=12, vocab=101):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[0, 9:] = 0  # padding in one row
    ids[0, 9:] = 0
    labels = torch.full((b, s), -100)
    chosen = torch.rand(b, s, generator=g) < 0.3
    chosen[:, 1] = True
    chosen &= mask.bool()
    labels[chosen] = ids[chosen]
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "labels": labels, "sample_index": torch.arange(b) + 40}


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()
            if p.grad is not None}


CASES = [
    dict(positions="masked", alum=dict(RELATIVE)),
    dict(positions="all", alum=dict(RELATIVE, steps=2, norm="inf")),
    dict(positions="masked", alum=dict(RELATIVE, detach_embeddings=True)),
    dict(positions="all", alum=dict(RELATIVE, loss="kl")),
]


@pytest.mark.parametrize("case", CASES, ids=["masked", "all-K2-inf", "detached", "kl"])
def test_lean_order_gives_the_fast_order_gradients(tiny_bert, case):
    model = tiny_bert()
    batch = _batch()
    alum = AlumConfig(**case["alum"])
    model.zero_grad(set_to_none=True)
    fast = mlm_micro_batch(model, batch, alum, True, case["positions"], run_seed=11)
    fast.loss.backward()
    g_fast = _grads(model)
    model.zero_grad(set_to_none=True)
    lean = lean_micro_batch(module_runner(model), batch, alum, True, case["positions"],
                            run_seed=11)
    g_lean = _grads(model)
    assert not fast.adv.skipped and not lean.adv.skipped
    assert float(lean.loss) == pytest.approx(float(fast.loss.detach()), rel=1e-6)
    assert float(lean.adv.adv_loss) == pytest.approx(float(fast.adv.adv_loss), rel=1e-5)
    assert set(g_lean) == set(g_fast)
    for name, g in g_fast.items():
        torch.testing.assert_close(g_lean[name], g, rtol=1e-5, atol=1e-7, msg=name)
    # The adversarial term matters here: the gradients differ from the MLM loss's alone.
    model.zero_grad(set_to_none=True)
    plain = mlm_micro_batch(model, batch, None, False, case["positions"])
    plain.loss.backward()
    differs = max(float((g_fast[n] - p.grad).abs().max()) for n, p in model.named_parameters()
                  if p.grad is not None)
    assert differs > 1e-4


def test_lean_order_replays_the_clean_pass_under_dropout(tiny_bert):
    """With dropout on, pass 4's clean logits must be pass 1's (same masks): the MLM loss
    lean reports equals a plain forward's from the same generator state, and so does the
    fast order's; without the replay it would be another dropout draw."""
    from alum.pretrain.checkpoint import capture_rng_state, restore_rng_state

    model = tiny_bert(dropout=0.2)
    batch = _batch(seed=1)
    alum = AlumConfig(**RELATIVE)
    state = capture_rng_state()  # torch's generator and megatron's tracker (attention dropout)
    plain = mlm_micro_batch(model, batch, None, False)
    restore_rng_state(state)
    fast = mlm_micro_batch(model, batch, alum, True, run_seed=5)
    restore_rng_state(state)
    lean = lean_micro_batch(module_runner(model), batch, alum, True, run_seed=5)
    assert float(fast.mlm_loss) == pytest.approx(float(plain.mlm_loss), abs=0, rel=1e-7)
    assert float(lean.mlm_loss) == pytest.approx(float(plain.mlm_loss), abs=0, rel=1e-7)
    # ...and a second clean draw is different (dropout is really on).
    other = mlm_micro_batch(model, batch, None, False)
    assert float(other.mlm_loss) != pytest.approx(float(plain.mlm_loss), rel=1e-4)


def test_parameters_are_frozen_only_during_the_ascent(tiny_bert):
    import alum.adversarial as adversarial

    model = tiny_bert()
    seen = []
    real = adversarial.ascent_gradient

    def spy(*args, **kwargs):
        seen.append(all(not p.requires_grad for p in model.parameters()))
        return real(*args, **kwargs)

    adversarial.ascent_gradient = spy
    try:
        lean_micro_batch(module_runner(model), _batch(), AlumConfig(**RELATIVE), True,
                         run_seed=1)
    finally:
        adversarial.ascent_gradient = real
    assert seen == [True]
    assert all(p.requires_grad for p in model.parameters())


def test_per_sample_random_start_does_not_depend_on_the_batch(tiny_bert):
    """A sample's δ start depends on its index only: split a batch in two and the rows agree."""
    from alum.pretrain.alum_layout import standard_normal_start

    model = tiny_bert()
    index = torch.tensor([7, 8, 9, 10])
    whole = standard_normal_start(model, index, 12, 32, run_seed=3, device=torch.device("cpu"))
    half = standard_normal_start(model, index[2:], 12, 32, run_seed=3,
                                 device=torch.device("cpu"))
    assert torch.equal(whole[2:], half)
    assert not torch.equal(whole[0], whole[1])
    other_seed = standard_normal_start(model, index, 12, 32, run_seed=4,
                                       device=torch.device("cpu"))
    assert not torch.equal(whole, other_seed)


@pytest.mark.parametrize("stage", ["zero1", "zero2", pytest.param("zero3", marks=pytest.mark.slow)])
def test_lean_order_trains_like_the_fast_order(tmp_path, sample_cache, stage):
    kw = dict(steps=4, grad_accum=2, layers=2, alum=AlumConfig(start_step=1, **RELATIVE))
    fast = run(tmp_path, sample_cache, "fast", **kw)
    cfg = tiny_config(tmp_path / f"lean_{stage}", sample_cache, ds_config=stage, **kw)
    cfg.alum_order = "lean"
    from alum.pretrain import Trainer

    lean = Trainer(cfg).train()
    assert fast.alum_steps == lean.alum_steps == 3
    assert lean.losses == pytest.approx(fast.losses, abs=1e-5)
    assert lean.adv_means["adv_loss"] == pytest.approx(fast.adv_means["adv_loss"], rel=1e-4)


def test_alum_order_is_validated():
    with pytest.raises(ValueError, match="PretrainConfig.alum_order"):
        PretrainConfig(alum_order="fastest")
    with pytest.raises(ValueError, match="AlumConfig.loss.*symmetric KL"):
        PretrainConfig(train=TrainConfig(tensor_parallel_size=2),
                       alum=AlumConfig(loss="kl"))
    with pytest.raises(ValueError, match="AlumConfig.level"):
        PretrainConfig(train=TrainConfig(tensor_parallel_size=2, sequence_parallel=True),
                       alum=AlumConfig(level="sequence"))
    PretrainConfig(train=TrainConfig(tensor_parallel_size=2), alum=AlumConfig())  # accepted
    PretrainConfig(train=TrainConfig(ds_config="zero3"), alum=AlumConfig(),
                   alum_order="lean")  # accepted
