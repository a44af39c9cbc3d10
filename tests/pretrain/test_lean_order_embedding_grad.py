"""The lean order equals the fast order when the perturbed branch reaches the embedding
layer (``detach_embeddings=False``): pass 3's gradient at the embedding output, handed to
pass 4's recomputation of it, is 10-20% of the embedding layer's gradient here
(ε = step = 1, α = 10); a lean order that dropped it fails this test."""
import pytest
import torch

from alum import AlumConfig
from alum.pretrain.lean_order import lean_micro_batch
from alum.pretrain.mlm_step import module_runner
from alum.pretrain.mlm_step import mlm_micro_batch

from .test_alum_orders import _batch, _grads, tiny_bert  # noqa: F401 (fixture)
from .test_training import RELATIVE


@pytest.mark.parametrize("loss,positions", [("sym_kl", "masked"), ("kl", "all")])
def test_lean_equals_fast_with_gradient_into_the_embeddings(tiny_bert, loss, positions):  # noqa: F811
    model = tiny_bert()
    batch = _batch(seed=2)
    alum = AlumConfig(**dict(RELATIVE, epsilon=1.0, step_size=1.0, loss=loss,
                                detach_embeddings=False))
    model.zero_grad(set_to_none=True)
    fast = mlm_micro_batch(model, batch, alum, True, positions, run_seed=11)
    fast.loss.backward()
    g_fast = _grads(model)
    model.zero_grad(set_to_none=True)
    lean = lean_micro_batch(module_runner(model), batch, alum, True, positions, run_seed=11)
    g_lean = _grads(model)
    assert not fast.adv.skipped and not lean.adv.skipped
    assert set(g_lean) == set(g_fast)
    for name, g in g_fast.items():
        torch.testing.assert_close(g_lean[name], g, rtol=1e-5, atol=1e-6, msg=name)
