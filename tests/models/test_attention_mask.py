"""Attention without an additive mask: no mask for unpadded batches, a boolean one otherwise.

The reference is the additive HF mask (``extended_attention_mask``: 0 or the dtype's
minimum, ``[b, 1, 1, s]``) fed to the same model, and, independently, a float64
softmax attention written out here.
"""
import math

import pytest
import torch
import torch.nn.functional as F

import alum.models.bert as bert
from alum.models import ModelConfig, extended_attention_mask, sdpa_attention_mask
from alum.parallel import ParallelConfig, build_model

pytestmark = pytest.mark.usefixtures("single_process_parallel")

VOCAB = 211   # odd: the padded vocabulary has padding columns


def model_and_batch(family, dtype, padded, b=3, s=13, seed=0):
    cfg = ModelConfig.named("tiny", family, vocab_size=VOCAB, hidden_dropout=0.0,
                            attention_dropout=0.0, hidden_size=48, num_attention_heads=3,
                            ffn_hidden_size=80)
    model, = build_model(cfg, ParallelConfig())
    model = model.to(dtype).eval()
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(cfg.pad_token_id + 1, VOCAB, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    if padded:
        mask[1, 9:] = 0
        mask[2, 4:] = 0
    ids[mask == 0] = cfg.pad_token_id
    labels = torch.full_like(ids, -100)
    labels[torch.rand(b, s, generator=g) < 0.4] = 5
    labels[:, 0] = 7
    return model, ids, mask, labels


def logits_and_grads(model, ids, mask, labels, additive: bool):
    """Logits at every position and every parameter's gradient of the MLM loss; with
    ``additive`` the model gets HF's additive mask (the attention path this replaces)."""
    if additive:
        model.attention_mask = lambda m: extended_attention_mask(m, next(model.parameters()).dtype)
    try:
        model.zero_grad(set_to_none=True)
        logits = model(ids, mask)
        model.mlm_loss(logits, labels).backward()
    finally:
        model.__dict__.pop("attention_mask", None)
    grads = {n: p.grad.float().clone() for n, p in model.named_parameters()}
    return logits.detach().float(), grads


def test_sdpa_mask_is_none_without_padding_and_boolean_with():
    keep = torch.ones(2, 5, dtype=torch.long)
    assert sdpa_attention_mask(keep) is None
    keep[1, 3:] = 0
    mask = sdpa_attention_mask(keep)
    assert mask.dtype == torch.bool and mask.shape == (2, 1, 1, 5)
    assert torch.equal(mask[:, 0, 0], keep.bool())


@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logits_and_grads_equal_the_additive_mask(family, padded, dtype):
    model, ids, mask, labels = model_and_batch(family, dtype, padded)
    ref_logits, ref_grads = logits_and_grads(model, ids, mask, labels, additive=True)
    logits, grads = logits_and_grads(model, ids, mask, labels, additive=False)
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    real = slice(0, VOCAB)  # padding columns: the dtype's minimum in both
    torch.testing.assert_close(logits[..., real], ref_logits[..., real], **tol)
    assert grads.keys() == ref_grads.keys()
    for name, ref in ref_grads.items():
        scale = ref.abs().max().clamp_min(1e-6)
        torch.testing.assert_close(grads[name] / scale, ref / scale, **tol, msg=name)


def test_attention_equals_a_float64_softmax_reference():
    """One layer's attention against softmax(QKᵀ/√d + mask)V written out in float64."""
    model, ids, mask, _ = model_and_batch("bert", torch.float32, padded=True)
    attn = model.layers[0].attention
    x = torch.randn(ids.shape[1], ids.shape[0], 48, dtype=torch.float32, requires_grad=True)
    got = attn(x, sdpa_attention_mask(mask))
    got.sum().backward()
    got_grad = x.grad.clone()

    xd = x.detach().double().requires_grad_(True)
    w = attn.qkv.linear.weight.double()
    bias = attn.qkv.linear.bias.double()
    qkv = (xd @ w.t() + bias).view(ids.shape[1], ids.shape[0], 3, 3, 16)  # [s, b, nh, 3, d]
    q, k, v = (qkv[:, :, :, i].permute(1, 2, 0, 3) for i in range(3))
    scores = q @ k.transpose(-1, -2) / math.sqrt(16)
    scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
    ctx = scores.softmax(-1) @ v                                       # [b, nh, s, d]
    ctx = ctx.permute(2, 0, 1, 3).reshape(ids.shape[1], ids.shape[0], 48)
    ref = ctx @ attn.out.linear.weight.double().t() + attn.out.linear.bias.double()
    ref.sum().backward()
    torch.testing.assert_close(got.double(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad.double(), xd.grad, rtol=1e-5, atol=1e-5)


def test_unpadded_batch_passes_no_mask_to_sdpa(monkeypatch):
    seen = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        seen.append(kwargs.get("attn_mask"))
        return real(*args, **kwargs)

    monkeypatch.setattr(bert.F, "scaled_dot_product_attention", spy)
    model, ids, mask, _ = model_and_batch("bert", torch.float32, padded=False)
    model(ids, mask)
    assert len(seen) == len(model.layers) and all(m is None for m in seen)
    seen.clear()
    mask[0, -2:] = 0
    model(ids, mask)
    assert all(m is not None and m.dtype == torch.bool for m in seen)


def test_mask_decided_once_per_batch(monkeypatch):
    """ALUM's passes reuse the batch's mask tensor: one decision (one host read) for
    all of them, and a new one for a new or modified mask."""
    calls = []
    real = bert.sdpa_attention_mask
    monkeypatch.setattr(bert, "sdpa_attention_mask", lambda m: calls.append(1) or real(m))
    model, ids, mask, _ = model_and_batch("bert", torch.float32, padded=False)
    embeds = model.embed(ids)
    for _ in range(3):
        model.forward_from_embeddings(embeds, mask)
    assert len(calls) == 1
    mask[0, -1] = 0                      # in place: the decision is stale
    out = model.forward_from_embeddings(embeds, mask)
    assert len(calls) == 2
    model.forward_from_embeddings(embeds, mask.clone())
    assert len(calls) == 3
    # And the stale decision was not used: equal to a fresh model call.
    torch.testing.assert_close(out, model(ids, mask.clone()))
