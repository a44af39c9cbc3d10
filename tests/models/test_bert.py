"""The BERT/RoBERTa MLM model in one process: shapes, the ALUM split, HF equality."""
import pytest
import torch

from alum.models import BertMLM, ModelConfig, roberta_position_ids
from alum.parallel import ParallelConfig, build_model, tensor_parallel_spec

from .hf_weights import hf_model_like

pytestmark = pytest.mark.usefixtures("single_process_parallel")

VOCAB = 1000


def tiny(family="bert", **changes):
    fields = dict(vocab_size=VOCAB, hidden_dropout=0.0, attention_dropout=0.0)
    fields.update(changes)
    return ModelConfig.named("tiny", family, **fields)


def batch(cfg, b=3, s=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = cfg.pad_token_id + 1
    ids = torch.randint(low, cfg.vocab_size, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[1, 8:] = 0                                  # a padded row
    mask[2, 5:] = 0
    ids[mask == 0] = cfg.pad_token_id
    types = torch.zeros_like(ids)
    if cfg.type_vocab_size > 1:
        types[:, s // 2:] = 1
    labels = torch.full_like(ids, -100)
    labels[0, 2], labels[1, 3], labels[2, 4] = 7, 11, 13
    return ids, mask, types, labels


def tensors(model):
    """The state dict without megatron's ``_extra_state`` entries (None)."""
    return {k: v for k, v in model.state_dict().items() if v is not None}


def build(cfg):
    model, = build_model(cfg, ParallelConfig())
    return model.eval()


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_logits_shape_and_padding_columns(family):
    cfg = tiny(family)
    model = build(cfg)
    ids, mask, types, _ = batch(cfg)
    logits = model(ids, mask, token_type_ids=types if family == "bert" else None)
    padded = cfg.padded_vocab_size(1)
    assert logits.shape == (3, 12, padded) and padded == 1024
    # Megatron's padding columns carry no probability.
    assert torch.all(logits[..., VOCAB:] == torch.finfo(logits.dtype).min)
    assert model.embed(ids).shape == (3, 12, cfg.hidden_size)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_delta_zero_invariant_is_exact(family):
    cfg = tiny(family)
    model = build(cfg)
    ids, mask, types, _ = batch(cfg)
    clean = model(ids, mask, token_type_ids=types)
    embeds = model.embed(ids, token_type_ids=types)
    split = model.forward_from_embeddings(embeds + torch.zeros_like(embeds), mask)
    assert torch.equal(clean, split)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_head_at_rows_equals_full_logits_selected(family):
    """forward(rows=...) evaluates the head at those positions only: the same logits,
    loss and parameter gradients as the full logits indexed by the mask."""
    cfg = tiny(family)
    model = build(cfg)
    ids, mask, types, labels = batch(cfg)
    rows = labels.ne(-100)
    assert 0 < int(rows.sum()) < rows.numel()

    def loss_and_grads(picked_logits, picked_labels):
        model.zero_grad(set_to_none=True)
        loss = model.mlm_loss(picked_logits, picked_labels)
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                               if p.grad is not None}

    full = model(ids, mask, token_type_ids=types)
    at_rows = model(ids, mask, token_type_ids=types, rows=rows)
    assert at_rows.shape == (int(rows.sum()), full.shape[-1])
    torch.testing.assert_close(at_rows, full[rows], rtol=1e-6, atol=1e-6)
    ref_loss, ref_grads = loss_and_grads(full, labels)
    loss, grads = loss_and_grads(at_rows, labels[rows])
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    assert grads.keys() == ref_grads.keys()
    for name in ref_grads:
        # fp32 sums in another order (the full decoder adds exact zeros for the rows
        # that are not picked): 5e-7 at most here, against gradients of order 1.
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-5, atol=2e-6,
                                   msg=name)
    # No predicted position: no rows, a zero loss that still back-propagates.
    none = torch.zeros_like(rows)
    empty = model(ids, mask, token_type_ids=types, rows=none)
    assert empty.shape == (0, full.shape[-1])
    assert model.mlm_loss(empty, labels[none]).item() == 0.0


def test_roberta_position_ids_equal_hf():
    from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

    ids = torch.tensor([[0, 5, 6, 2, 1, 1], [0, 9, 1, 7, 2, 1]])
    ours = roberta_position_ids(ids, pad_token_id=1)
    theirs = RobertaEmbeddings.create_position_ids_from_input_ids(ids, padding_idx=1)
    assert torch.equal(ours, theirs)
    assert ours.tolist()[0] == [2, 3, 4, 5, 1, 1]


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_logits_equal_transformers(family):
    cfg = tiny(family)
    model = build(cfg)
    hf = hf_model_like(model)
    ids, mask, types, labels = batch(cfg)
    kwargs = dict(token_type_ids=types) if family == "bert" else {}
    with torch.no_grad():
        ours = model(ids, mask, **kwargs)[..., :VOCAB]
        theirs = hf(input_ids=ids, attention_mask=mask, **kwargs).logits
    keep = mask.bool()
    torch.testing.assert_close(ours[keep], theirs[keep], rtol=1e-5, atol=1e-5)
    loss = model.mlm_loss(model(ids, mask, **kwargs), labels)
    hf_loss = hf(input_ids=ids, attention_mask=mask, labels=labels, **kwargs).loss
    torch.testing.assert_close(loss, hf_loss, rtol=1e-5, atol=1e-5)


def test_mlm_loss_ignores_minus_100_and_keeps_logits():
    cfg = tiny()
    model = build(cfg)
    ids, mask, types, labels = batch(cfg)
    logits = model(ids, mask, token_type_ids=types)
    before = logits.clone()
    loss = model.mlm_loss(logits, labels)
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                            labels.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(loss, ref)
    assert torch.equal(logits, before)               # megatron's in-place max is on a copy
    loss.backward()
    nothing = model.mlm_loss(logits.detach().requires_grad_(), torch.full_like(labels, -100))
    assert nothing.item() == 0.0


def test_pipeline_stages_rebuild_the_same_weights():
    cfg = tiny(num_layers=4)
    spec = tensor_parallel_spec()
    full = BertMLM(cfg, spec)
    first = BertMLM(cfg, spec, post_process=False, layer_range=(0, 2))
    last = BertMLM(cfg, spec, pre_process=False, layer_range=(2, 4))
    full_sd, first_sd, last_sd = (tensors(m) for m in (full, first, last))
    for k, v in first_sd.items():
        assert torch.equal(v, full_sd[k]), k
    for k, v in last_sd.items():
        if k.startswith("layers."):
            i = int(k.split(".")[1])
            ref = full_sd[k.replace(f"layers.{i}.", f"layers.{i + 2}.", 1)]
        elif k.startswith("output_word_embeddings."):
            ref = full_sd[k.replace("output_word_embeddings.", "embeddings.word_embeddings.")]
        else:
            ref = full_sd[k]
        assert torch.equal(v, ref), k
    assert [p.shape for p in last.shared_embedding_parameters()] == [(1024, 64)]


def test_init_independent_of_global_seed_and_dropout_trains():
    cfg = tiny()
    torch.manual_seed(1)
    a = build(cfg)
    torch.manual_seed(2)
    b = build(cfg)
    for (k, v), w in zip(tensors(a).items(), tensors(b).values()):
        assert torch.equal(v, w), k
    noisy = build(tiny(hidden_dropout=0.1, attention_dropout=0.1)).train()
    ids, mask, types, _ = batch(cfg)
    assert not torch.equal(noisy(ids, mask), noisy(ids, mask))
