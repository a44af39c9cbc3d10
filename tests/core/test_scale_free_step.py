"""The normalised step is scale-free (docs/algorithm.md, "Update rules").

A row with a non-zero gradient moves by exactly η in the config's norm, whatever the
gradient's magnitude (1e-12 to 1e6, fp32 and bf16); a row with a zero gradient does not
move; and the same example gets the same δ alone and inside a batch of 64, although the
batch-mean divergence divides its gradient by 64.
"""
import pytest
import torch

from alum import AlumConfig, adv_project
from alum.adversarial import AlumStep
from alum.perturbation import unit_rows

MAGNITUDES = [1e-12, 1e-9, 1e-6, 1e-3, 1.0, 1e3, 1e6]
# Relative error of one row's norm after the update, by dtype: rounding of the result
# into the dtype (bf16 keeps 8 significant bits).
NORM_RTOL = {torch.float32: 1e-6, torch.bfloat16: 1e-2, torch.float64: 1e-13}


def _row_norms(x: torch.Tensor, norm: str, level: str) -> torch.Tensor:
    x = x.double()
    if level == "sequence":
        x = x.reshape(x.shape[0], -1)
    return x.abs().amax(-1) if norm == "inf" else x.pow(2).sum(-1).sqrt()


def _grad(shape, seed, magnitude, dtype):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=g, dtype=torch.float64)
    return (base * magnitude).to(dtype)


@pytest.mark.parametrize("dtype", list(NORM_RTOL))
@pytest.mark.parametrize("norm", ["inf", "l2"])
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_project_moves_every_row_by_exactly_eta(dtype, norm, level, magnitude):
    eta = 0.25
    # epsilon far above eta: the projection never clips, so ‖δ_new‖ = ‖η g/‖g‖‖ = η.
    cfg = AlumConfig(update="project", norm=norm, level=level, step_size=eta, epsilon=10.0)
    shape = (3, 5, 19)
    grad = _grad(shape, 11 + len(norm) + len(level), magnitude, dtype)
    new = adv_project(torch.zeros(shape, dtype=dtype), grad, cfg)
    got = _row_norms(new, norm, level)
    torch.testing.assert_close(got, torch.full_like(got, eta), rtol=NORM_RTOL[dtype], atol=0)


@pytest.mark.parametrize("dtype", list(NORM_RTOL))
@pytest.mark.parametrize("norm", ["inf", "l2"])
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_step_does_not_depend_on_the_gradient_scale(dtype, norm, level):
    # Powers of two are exact in every dtype, so the scaled gradients have exactly the
    # same direction and the new δ must be identical up to the update's own rounding.
    shape = (2, 6, 23)
    g = torch.Generator().manual_seed(5)
    delta = (torch.randn(shape, generator=g) * 0.01).to(dtype)
    grad = torch.randn(shape, generator=g).to(dtype)
    mask = torch.ones(shape[:2], dtype=torch.long)
    mask[1, 4:] = 0
    # (The released `normalize` rule adds the raw η·g: not scale-free by design.)
    cfg = AlumConfig(update="project", norm=norm, level=level, step_size=0.05, epsilon=0.03)
    want = adv_project(delta, grad, cfg, mask)
    for k in (-40, -20, -3, 7, 20):
        got = adv_project(delta, grad * 2.0 ** k, cfg, mask)
        torch.testing.assert_close(got.double(), want.double(), rtol=NORM_RTOL[dtype], atol=0)


@pytest.mark.parametrize("norm", ["inf", "l2"])
@pytest.mark.parametrize("magnitude", MAGNITUDES)
def test_normalize_rule_gives_norm_r_at_any_scale(norm, magnitude):
    # δ ← r·u/‖u‖: the result has norm r however small or large u = δ + η·g is.
    cfg = AlumConfig(update="normalize", norm=norm, step_size=1.0, normalize_radius=0.7)
    shape = (2, 4, 9)
    grad = _grad(shape, 3, magnitude, torch.float32)
    new = adv_project(torch.zeros(shape), grad, cfg)
    got = _row_norms(new, norm, "token")
    torch.testing.assert_close(got, torch.full_like(got, 0.7), rtol=1e-6, atol=0)


@pytest.mark.parametrize("update", ["project", "normalize"])
@pytest.mark.parametrize("norm", ["inf", "l2"])
def test_zero_gradient_rows_do_not_move_and_stay_finite(update, norm):
    cfg = AlumConfig(update=update, norm=norm, step_size=0.1, epsilon=0.5)
    grad = torch.randn(2, 3, 8)
    grad[0, 1] = 0.0
    grad[1] = 0.0
    new = adv_project(torch.zeros(2, 3, 8), grad, cfg)
    assert torch.isfinite(new).all()
    assert torch.all(new[0, 1] == 0) and torch.all(new[1] == 0)
    assert torch.all(new[0, 0] != 0)


def test_unit_rows_keeps_non_finite_rows_non_finite():
    x = torch.randn(3, 6)
    x[1, 2] = float("nan")
    x[2, 0] = float("inf")
    out = unit_rows(x, "l2", "token")
    assert torch.isfinite(out[0]).all()
    assert not torch.isfinite(out[1]).all() and not torch.isfinite(out[2]).all()


class _TokenClassifier(torch.nn.Module):
    """Per-example model (no cross-example interaction): tokens -> mean pool -> logits."""

    def __init__(self, hidden: int, classes: int):
        super().__init__()
        self.mix = torch.nn.Linear(hidden, hidden)
        self.out = torch.nn.Linear(hidden, classes)

    def forward(self, embeds: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.mix(embeds)).mean(dim=1))


def _ascended(model, embeds, clean, cfg, noise) -> AlumStep:
    """The core's step after its random start and K ascent steps."""
    step = AlumStep(cfg, embeds, init_noise=noise)
    step.start()
    assert step.ascend(model, clean)
    return step


@pytest.mark.parametrize("norm", ["inf", "l2"])
def test_same_example_same_delta_in_a_batch_of_1_and_of_64(norm):
    torch.manual_seed(0)
    model = _TokenClassifier(hidden=16, classes=3).double()
    embeds = torch.randn(64, 7, 16, dtype=torch.float64)
    noise = torch.randn(64, 7, 16, dtype=torch.float64) * 1e-3
    cfg = AlumConfig(update="project", norm=norm, step_size=0.05, epsilon=0.1,
                     noise_std=1e-3, steps=2)
    with torch.no_grad():
        clean = model(embeds)
    big = _ascended(model, embeds, clean, cfg, noise)
    one = _ascended(model, embeds[:1], clean[:1], cfg, noise[:1])
    # The batch-mean KL gives example 0 a 64 times smaller gradient in the batch ...
    ratio = one.grad.norm() / big.grad[:1].norm()
    assert abs(float(ratio) - 64.0) < 1e-9
    # ... and the same δ all the same.
    torch.testing.assert_close(big.delta[:1], one.delta, rtol=1e-10, atol=1e-15)
