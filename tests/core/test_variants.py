"""The cheaper directions and the batch fraction (AlumConfig.direction, .fraction) against an
independent float64 reference written here (softmax/KL by hand, the update rule from
reference64.py), on odd shapes."""
import math
import zlib

import numpy as np
import pytest
import torch

from alum import AlumConfig, adversarial_loss
from alum.adversarial import AlumStep
from alum.cli_args import add_alum_arguments, alum_config_from_args
from alum.config import PRESETS

from . import reference64 as ref

RULES = [("project", "inf"), ("project", "l2"), ("normalize", "inf"), ("normalize", "l2")]


class CallDropout(torch.nn.Module):
    """Per-token MLP + masked mean pool, with a dropout mask that depends on the call
    count (so two passes differ, as two dropout passes do, and the reference can replay
    them)."""

    def __init__(self, hidden, classes, seed):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w1 = torch.nn.Parameter(torch.randn(hidden, 11, generator=g, dtype=torch.float64))
        self.b1 = torch.nn.Parameter(torch.randn(11, generator=g, dtype=torch.float64) * 0.1)
        self.w2 = torch.nn.Parameter(torch.randn(11, classes, generator=g, dtype=torch.float64))
        self.mask, self.calls, self.seed = None, 0, seed

    def drop(self, call, shape):
        keep = torch.rand(shape, generator=torch.Generator().manual_seed(self.seed * 97 + call))
        return (keep > 0.2).to(torch.float64) / 0.8

    def forward(self, x, call=None):
        if call is None:
            call, self.calls = self.calls, self.calls + 1
        h = torch.tanh(x @ self.w1 + self.b1) * self.drop(call, x.shape[:-1] + (11,))
        m = self.mask[:x.shape[0]].unsqueeze(-1).to(h.dtype)
        return ((h * m).sum(1) / m.sum(1)) @ self.w2


def batch(seed, B=3, T=5, H=7):
    g = torch.Generator().manual_seed(seed)
    embeds = torch.randn(B, T, H, generator=g, dtype=torch.float64)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[0, 3:] = 0
    mask[2, 4:] = 0
    return embeds, mask


def kl_t(p_logits, q_logits):
    """KL(softmax p ‖ softmax q) per row, spelled out."""
    p = torch.exp(p_logits - torch.logsumexp(p_logits, -1, keepdim=True))
    return (p * ((p_logits - torch.logsumexp(p_logits, -1, keepdim=True))
                 - (q_logits - torch.logsumexp(q_logits, -1, keepdim=True)))).sum(-1)


def reference(model, embeds, mask, cfg, direction, noise=None, labels=None):
    """(term, parameter gradients of the term, δ) by the docs' definition of each variant;
    the clean pass is call 0 and the perturbed one call 1, as in the step."""
    cfgd, m = cfg.to_dict(), mask.numpy()
    scale = ref.embed_scale(embeds.numpy(), cfgd, m) if cfg.epsilon_scale == "relative" \
        else None
    model.zero_grad()
    x = embeds.clone().requires_grad_(True)
    clean = model(x, call=0)
    if direction == "none":
        delta = np.zeros(embeds.shape)
    elif direction == "random":
        delta = ref.update(np.zeros(embeds.shape), noise.numpy() * m[..., None], cfgd, m, scale)
    else:  # free: the task loss's gradient at the embedding output
        task = torch.nn.functional.cross_entropy(clean, labels)
        (g,) = torch.autograd.grad(task, x)
        delta = ref.update(np.zeros(embeds.shape), g.numpy() * m[..., None], cfgd, m, scale)
    adv = model(embeds + torch.tensor(delta), call=1)
    c = clean.detach() if direction == "free" else clean
    term = cfg.alpha * (kl_t(c.detach(), adv) + kl_t(adv.detach(), c)).mean()
    term.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    return term.detach(), grads, delta


def run_step(model, embeds, mask, cfg, noise=None, labels=None):
    """The step as a caller drives it: the clean pass (call 0), for ``free`` its task
    loss's backward first, then adversarial_loss and the term's backward."""
    model.calls = 0
    x = embeds.clone().requires_grad_(True)
    clean = model(x)
    task_grad = None
    if cfg.direction == "free":
        task = torch.nn.functional.cross_entropy(clean, labels)
        (task_grad,) = torch.autograd.grad(task, x)
    seen = []

    def forward_fn(p):
        seen.append(p.detach().clone())
        return model(p)

    model.zero_grad()
    loss, stats = adversarial_loss(forward_fn, x, clean, cfg, mask=mask, init_noise=noise,
                                   task_grad=task_grad)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    return loss.detach(), grads, seen, stats


@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("direction", ["none", "random", "free"])
def test_variant_matches_float64_reference(direction, rule, level, relative):
    update, norm = rule
    seed = zlib.crc32(repr((direction, rule, level, relative)).encode()) % 10_000
    embeds, mask = batch(seed)
    model = CallDropout(embeds.shape[-1], 4, seed)
    model.mask = mask
    cfg = AlumConfig(alpha=1.3, noise_std=0.05, step_size=0.3, epsilon=0.2, steps=3,
                     norm=norm, level=level, update=update, normalize_radius=0.5,
                     epsilon_scale="relative" if relative else "absolute",
                     direction=direction)
    noise = torch.randn(embeds.shape, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(seed + 1)) * cfg.noise_std
    labels = torch.tensor([1, 3, 0])
    want, want_grads, want_delta = reference(model, embeds, mask, cfg, direction, noise, labels)
    got, got_grads, seen, stats = run_step(model, embeds, mask, cfg, noise, labels)
    # One perturbed pass and nothing else: K = 3 is ignored by these directions.
    assert len(seen) == 1 and model.calls == 2 and not stats.skipped
    torch.testing.assert_close(seen[0] - embeds, torch.tensor(want_delta), rtol=1e-9,
                               atol=1e-12)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-11)
    assert got > 0  # the two passes differ (dropout, and δ for random/free)


def test_none_gives_exactly_zero_delta_and_draws_nothing():
    embeds, mask = batch(5)
    cfg = AlumConfig.from_preset("rdrop")
    gen = torch.Generator().manual_seed(3)
    before = gen.get_state()
    step = AlumStep(cfg, embeds, mask, generator=gen)
    assert torch.equal(step.start(), torch.zeros_like(embeds))
    assert torch.equal(step.perturbed_input(), embeds)  # bit for bit the clean input
    assert torch.equal(gen.get_state(), before)
    assert step.ascent_steps == 0


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("norm", ["inf", "l2"])
def test_random_start_has_the_balls_size(level, norm):
    """η = ε (the presets): every valid row of δ lies on the ball's surface, relative to
    the row's embedding norm; padding stays zero."""
    embeds, mask = batch(11)
    cfg = AlumConfig.from_preset("random-start", norm=norm, level=level)
    step = AlumStep(cfg, embeds, mask, generator=torch.Generator().manual_seed(0))
    delta = step.start().numpy()
    scale = ref.embed_scale(embeds.numpy(), cfg.to_dict(), mask.numpy())
    for rows in ref._rows(delta.shape, level, mask.numpy()):
        d = np.stack([delta[b, t] for b, t in rows])
        size = np.abs(d).max() if norm == "inf" else np.sqrt((d * d).sum())
        assert math.isclose(size, cfg.epsilon * scale[rows[0]], rel_tol=1e-6)
    assert np.all(delta[mask.numpy() == 0] == 0)


def test_free_needs_the_task_gradient_and_skips_a_non_finite_one():
    embeds, mask = batch(2)
    model = CallDropout(7, 4, 2)
    model.mask = mask
    cfg = AlumConfig.from_preset("free")
    with pytest.raises(ValueError, match="task_grad"):
        adversarial_loss(model, embeds, model(embeds), cfg, mask=mask)
    bad = torch.full_like(embeds, float("nan"))
    loss, stats = adversarial_loss(model, embeds, model(embeds), cfg, mask=mask, task_grad=bad)
    assert stats.skipped and float(loss) == 0.0
    with pytest.raises(ValueError, match="direction='free'"):
        AlumStep(AlumConfig(), embeds, mask).take_gradient(bad)


@pytest.mark.parametrize("fraction, rows", [(0.5, 2), (0.34, 2), (0.3, 1), (1.0, 3)])
def test_fraction_takes_the_first_rows(fraction, rows):
    """The term equals the reference over the first ceil(fraction × B) sequences alone, and
    the perturbed pass sees only those."""
    embeds, mask = batch(7)
    model = CallDropout(7, 4, 7)
    model.mask = mask
    cfg = AlumConfig.from_preset("relative-finetune", fraction=fraction, noise_std=0.3,
                                 direction="random")
    assert cfg.adversarial_rows(3) == rows
    noise = torch.randn(embeds.shape, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(1)) * cfg.noise_std
    got, got_grads, seen, _ = run_step(model, embeds, mask, cfg, noise)
    assert seen[0].shape[0] == rows
    want, want_grads, want_delta = reference(model, embeds[:rows], mask[:rows],
                                             cfg.replace(fraction=1.0), "random", noise[:rows])
    torch.testing.assert_close(seen[0] - embeds[:rows], torch.tensor(want_delta))
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-11)


def test_fraction_keeps_whole_examples_of_multiple_choice():
    """Logits [B, C] over embedding rows [B·C, T, H]: the first examples, all their choices."""
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(5 * 3, 4, 6, generator=g, dtype=torch.float64)
    w = torch.randn(6, generator=g, dtype=torch.float64)
    seen = []

    def forward_fn(x):
        seen.append(x.shape[0])
        return (x.mean(1) @ w).reshape(-1, 3)

    cfg = AlumConfig.from_preset("rdrop", fraction=0.5)
    adversarial_loss(forward_fn, embeds, forward_fn(embeds), cfg)
    assert seen == [15, 9]  # ceil(0.5 × 5) = 3 examples × 3 choices
    with pytest.raises(ValueError, match="whole number of sequences"):
        adversarial_loss(forward_fn, embeds[:14], torch.zeros(5, 3), cfg)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_fraction_is_validated(bad):
    with pytest.raises(ValueError, match=r"AlumConfig.fraction"):
        AlumConfig(fraction=bad)


def test_direction_is_validated_and_reaches_the_command_line():
    with pytest.raises(ValueError, match=r"AlumConfig.direction='sideways'"):
        AlumConfig(direction="sideways")
    import argparse

    p = argparse.ArgumentParser()
    add_alum_arguments(p, default_preset="relative-finetune")
    args = p.parse_args(["--adv-direction", "free", "--adv-fraction", "0.25"])
    cfg = alum_config_from_args(args)
    assert (cfg.direction, cfg.fraction) == ("free", 0.25)
    assert "--adv-direction" in p.format_help() and "ceil(fraction" in p.format_help()
    with pytest.raises(SystemExit):
        p.parse_args(["--adv-direction", "sideways"])


def test_ascent_steps_without_the_ascent_direction_are_refused_on_the_command_line():
    import argparse

    p = argparse.ArgumentParser()
    add_alum_arguments(p, default_preset="free")
    # K counts ascent passes: with the free preset it would be ignored, so it is refused,
    # naming the preset and the way out.
    with pytest.raises(ValueError, match=r"--adv-steps 2 is used only by --adv-direction "
                                         r"ascent.*'free' \(--alum-preset free\)"):
        alum_config_from_args(p.parse_args(["--adv-steps", "2"]))
    with pytest.raises(ValueError, match=r"'random' \(--alum-preset free, --adv-direction\)"):
        alum_config_from_args(p.parse_args(["--adv-steps", "2", "--adv-direction", "random"]))
    cfg = alum_config_from_args(p.parse_args(["--adv-steps", "2", "--adv-direction", "ascent"]))
    assert (cfg.direction, cfg.steps, cfg.ascent_steps) == ("ascent", 2, 2)
    assert alum_config_from_args(p.parse_args([])).steps == 1  # the preset's, not given


def test_variant_presets_change_one_field_of_the_default():
    base = PRESETS["relative-finetune"]
    for name, field, value in [("rdrop", "direction", "none"),
                               ("random-start", "direction", "random"),
                               ("free", "direction", "free"), ("half-batch", "fraction", 0.5)]:
        cfg = AlumConfig.from_preset(name)
        assert getattr(cfg, field) == value
        assert {k: v for k, v in cfg.to_dict().items() if k != field} == \
            {k: v for k, v in AlumConfig(**base).to_dict().items() if k != field}
