"""alum.split_term: the final term's gradient injected in two backward passes sums
to the term's own gradient (float64 oracle), for the symmetric KL computed once and for
the divergences evaluated in each pass."""
import pytest
import torch

from alum.divergence import Divergences
from alum.kernels.sym_kl import symmetric_kl_value_and_grad
from alum.split_term import SplitTerm, with_gradient

from tests.kernels.cases import make_logits


def test_with_gradient_value_and_scaled_gradient():
    x = torch.randn(4, 7, requires_grad=True)
    grad = torch.randn(4, 7)
    value = torch.tensor(0.25)
    out = with_gradient(x, value, grad, sign=-1.0)
    assert float(out.detach()) == 0.25
    (3.0 * out).backward()
    torch.testing.assert_close(x.grad, -3.0 * grad, rtol=0, atol=0)


def test_with_gradient_consume_overwrites_only_when_asked():
    grad = torch.randn(3, 5)
    kept = grad.clone()
    x = torch.randn(3, 5, requires_grad=True)
    (2.0 * with_gradient(x, torch.tensor(1.0), grad)).backward()
    torch.testing.assert_close(grad, kept, rtol=0, atol=0)
    y = torch.randn(3, 5, requires_grad=True)
    (2.0 * with_gradient(y, torch.tensor(1.0), grad, sign=-1.0, consume=True)).backward()
    torch.testing.assert_close(y.grad, -2.0 * kept, rtol=0, atol=0)
    torch.testing.assert_close(grad, -2.0 * kept, rtol=0, atol=0)  # scaled in place


def _oracle(kind, adv, clean, mask):
    """The term's gradient with respect to both branches at once, in float64."""
    a = adv.double().requires_grad_()
    c = clean.double().requires_grad_()
    term = Divergences.for_loss(kind).final(a, c, mask)
    term.backward()
    return term.detach(), a.grad, c.grad


@pytest.mark.parametrize("kind,computed_once", [("sym_kl", True), ("sym_kl", False),
                                                ("kl", False), ("mse", False)])
@pytest.mark.parametrize("masked", [False, True])
def test_two_passes_sum_to_the_terms_gradient(kind, computed_once, masked):
    adv, clean = make_logits((2, 5, 31), torch.float32, seed=3)
    mask = torch.tensor([[1.0, 1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 1.0, 1.0]]) \
        if masked else None
    final = Divergences.for_loss(kind).final

    def final_fn(a, c, _m):
        return final(a, c, mask)

    value_and_grad = (lambda a, c: symmetric_kl_value_and_grad(a, c, mask)) \
        if computed_once else None
    # The perturbed branch's graph (a leaf here), the clean rows without a graph (pass 1).
    a = adv.clone().requires_grad_()
    split = SplitTerm(final_fn, value_and_grad, a, clean.clone())
    (10.0 * split.perturbed()).backward()
    # Pass 4 recomputes the clean rows with a graph.
    c = clean.clone().requires_grad_()
    clean_term = split.clean(c)
    if clean_term.requires_grad:  # kl: KL(sg p_clean ‖ p_adv) sends none into the clean
        (10.0 * clean_term).backward()
    value, ga, gc = _oracle(kind, adv, clean, mask)
    assert (c.grad is None) == (gc is None) == (kind == "kl")
    torch.testing.assert_close(split.value.double(), value, rtol=2e-5, atol=0)
    for got, exp in ((a.grad, ga), (c.grad, gc)):
        if exp is None:
            continue
        torch.testing.assert_close(got.double(), 10.0 * exp, rtol=0,
                                   atol=2e-5 * float(exp.abs().max()) * 10.0)
    if computed_once:  # one gradient, injected with both signs
        torch.testing.assert_close(c.grad, -a.grad, rtol=0, atol=0)


def test_clean_rows_of_another_shape_are_rejected():
    adv, clean = make_logits((4, 13), torch.float32, seed=4)
    split = SplitTerm(lambda a, c, m: None, lambda a, c: symmetric_kl_value_and_grad(a, c),
                      adv.clone().requires_grad_(), clean)
    split.perturbed().backward()
    with pytest.raises(ValueError, match=r"clean logits of shape \(3, 13\).*\(4, 13\)"):
        split.clean(clean[:3].clone().requires_grad_())
