"""adv_project (the fused kernel's reference) against the float64 row-by-row oracle."""
import numpy as np
import pytest
import torch

from alum import AlumConfig, adv_project
from alum.perturbation import embedding_scale

from . import reference64 as ref

RULES = [("project", "inf"), ("project", "l2"), ("normalize", "inf"), ("normalize", "l2"),
         ("normalize", "l1")]
TOL = {torch.float64: dict(rtol=1e-12, atol=1e-15), torch.float32: dict(rtol=1e-5, atol=1e-7),
       torch.bfloat16: dict(rtol=1.6e-2, atol=1e-5), torch.float16: dict(rtol=2e-3, atol=1e-7)}


def _inputs(shape, seed, dtype, scale_d=0.05, scale_g=1.0):
    g = torch.Generator().manual_seed(seed)
    delta = (torch.randn(shape, generator=g, dtype=torch.float64) * scale_d).to(dtype)
    grad = (torch.randn(shape, generator=g, dtype=torch.float64) * scale_g).to(dtype)
    mask = (torch.rand(shape[:2], generator=g) > 0.25).long()
    mask[:, 0] = 1
    return delta, grad, mask


@pytest.mark.parametrize("dtype", list(TOL))
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("shape", [(2, 3, 7), (3, 5, 13), (1, 17, 31)])
def test_matches_reference(dtype, rule, level, shape):
    update, norm = rule
    cfg = AlumConfig(update=update, norm=norm, level=level, step_size=0.03, epsilon=0.04,
                     normalize_radius=0.7)
    seed = sum(shape) * 7 + len(update) + len(norm) + len(level)
    delta, grad, mask = _inputs(shape, seed, dtype)
    out = adv_project(delta, grad, cfg, mask=mask)
    assert out.dtype == dtype and out.shape == delta.shape
    want = ref.update(delta.double().numpy(), grad.double().numpy(), cfg.to_dict(),
                      mask.numpy())
    want = torch.tensor(want)
    if norm == "l1":
        # sign(): compare exactly where the pre-sign value is not within rounding of 0.
        assert torch.all(out.double()[mask == 0] == 0)
    torch.testing.assert_close(out.double(), want.to(dtype).double(), **TOL[dtype])


@pytest.mark.parametrize("rule", RULES)
def test_strided_rows_equal_contiguous(rule):
    update, norm = rule
    cfg = AlumConfig(update=update, norm=norm, step_size=0.1, epsilon=0.05)
    big_d, big_g, _ = _inputs((4, 6, 22), 3, torch.float32)
    delta, grad = big_d[:, ::2, 1:12], big_g.transpose(0, 1).transpose(0, 1)[:, ::2, 1:12]
    assert not delta.is_contiguous()
    torch.testing.assert_close(adv_project(delta, grad, cfg),
                               adv_project(delta.contiguous(), grad.contiguous(), cfg),
                               rtol=0, atol=0)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_padding_rows_are_zero_and_do_not_enter_sequence_norms(level):
    cfg = AlumConfig(update="normalize", norm="l2", level=level, step_size=0.5)
    delta, grad, mask = _inputs((3, 6, 9), 1, torch.float32)
    out = adv_project(delta, grad, cfg, mask=mask)
    assert torch.all(out[mask == 0] == 0)
    # Changing what lies under the padding changes nothing.
    delta2, grad2 = delta.clone(), grad.clone()
    delta2[mask == 0] = 100.0
    grad2[mask == 0] = -50.0
    torch.testing.assert_close(adv_project(delta2, grad2, cfg, mask=mask), out, rtol=0, atol=0)


def test_project_stays_in_the_ball_and_normalize_has_radius_r():
    delta, grad, _ = _inputs((2, 4, 10), 5, torch.float32, scale_d=1.0)
    eps = 0.01
    inf = adv_project(delta, grad, AlumConfig(norm="inf", epsilon=eps, step_size=1.0))
    assert inf.abs().max() <= eps
    l2 = adv_project(delta, grad, AlumConfig(norm="l2", epsilon=eps, step_size=1.0))
    assert torch.all(l2.norm(dim=-1) <= eps * (1 + 1e-6))
    nrm = adv_project(delta, grad, AlumConfig(update="normalize", norm="l2",
                                              normalize_radius=2.0))
    torch.testing.assert_close(nrm.norm(dim=-1), torch.full((2, 4), 2.0), rtol=1e-5, atol=0)


def test_relative_scale_multiplies_step_and_radius():
    delta, grad, mask = _inputs((2, 5, 8), 9, torch.float64)
    embeds = torch.randn(2, 5, 8, dtype=torch.float64) * 3
    cfg = AlumConfig(norm="l2", epsilon=0.1, step_size=0.05, epsilon_scale="relative")
    scale = embedding_scale(embeds, cfg, mask)
    out = adv_project(delta, grad, cfg, mask=mask, scale=scale)
    want = ref.update(delta.numpy(), grad.numpy(), cfg.to_dict(), mask.numpy(),
                      ref.embed_scale(embeds.numpy(), cfg.to_dict(), mask.numpy()))
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-12, atol=1e-15)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError, match="grad shape"):
        adv_project(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5), AlumConfig())
    with pytest.raises(ValueError, match="mask shape"):
        adv_project(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), AlumConfig(),
                    mask=torch.ones(2, 4))
