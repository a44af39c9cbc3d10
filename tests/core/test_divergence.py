"""alum.divergence.kl_ascent_logits_grad: the ascent's ∂D/∂adv computed directly equals
autograd through D in float64 (every dtype, odd shapes, several row blocks, masks), and
ascent_gradient started from it gives δ's gradient through D (Algorithm 1's g_adv)."""
import pytest
import torch

from alum import AlumConfig, ascent_gradient
from alum.divergence import ascent_divergence, kl_ascent_logits_grad

from tests.kernels.cases import make_logits

from .test_adversarial_loss import TinyEncoder, make_batch

# Error bound relative to the largest gradient element: the fp32 softmaxes cost a few
# ulps; the result is rounded to the logits' dtype (bf16: 2^-8, fp16: 2^-11).
GRAD_RTOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 1e-2,
             torch.float16: 2e-3}


def oracle(kind, adv, clean, mask):
    a = adv.detach().double().requires_grad_()
    d = ascent_divergence(kind, a, clean.detach().double(),
                          None if mask is None else mask.double())
    (g,) = torch.autograd.grad(d, a)
    return g


@pytest.mark.parametrize("dtype", list(GRAD_RTOL))
@pytest.mark.parametrize("shape", [(5, 97), (2, 3, 1021), (40, 30011)],
                         ids=["5x97", "2x3x1021", "40x30011-three-blocks"])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_autograd_through_the_ascent_divergence(dtype, shape, masked):
    adv, clean = make_logits(shape, dtype, seed=shape[-1])
    mask = None
    if masked:
        mask = (torch.rand(shape[:-1], generator=torch.Generator().manual_seed(1)) > 0.3)
        mask = mask.to(torch.float32)
        mask.view(-1)[0] = 1.0
    got = kl_ascent_logits_grad(adv, clean, mask)
    assert got.shape == adv.shape and got.dtype == adv.dtype
    for kind in ("kl", "sym_kl"):  # the ascent's D is KL(sg p_clean ‖ p_adv) for both
        expected = oracle(kind, adv, clean, mask)
        err = (got.double() - expected).abs().max().item()
        assert err <= GRAD_RTOL[dtype] * expected.abs().max().item(), (kind, err)
    if masked:
        assert bool((got.reshape(-1, shape[-1])[mask.reshape(-1) == 0] == 0).all())


def test_shape_mismatch_is_rejected():
    adv, clean = make_logits((3, 11), torch.float32)
    with pytest.raises(ValueError, match=r"adv \(3, 11\) vs clean \(2, 11\)"):
        kl_ascent_logits_grad(adv, clean[:2])


@pytest.mark.parametrize("loss_scale", [1.0, 1024.0])
def test_ascent_gradient_started_from_it_equals_autograd_through_d(loss_scale):
    embeds, mask = make_batch(31)
    model = TinyEncoder(7, 5, per_token=True, seed=31)
    clean = model(embeds).detach()
    delta = torch.randn(embeds.shape, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(2)) * 0.3
    cfg = AlumConfig()
    through_d, _ = ascent_gradient(model, embeds, delta, clean, cfg, mask, loss_scale)
    direct, _ = ascent_gradient(model, embeds, delta, clean, cfg, mask, loss_scale,
                                logits_grad=kl_ascent_logits_grad)
    torch.testing.assert_close(direct, through_d, rtol=1e-10, atol=1e-14)
    assert bool((direct[mask == 0] == 0).all())
