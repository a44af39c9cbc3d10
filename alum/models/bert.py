"""BERT / RoBERTa masked-LM: the math only, built from a ``ModelSpec``.

Post-LN encoder layers as in Devlin et al. (2019) and HF ``BertLayer``:
``x = LN(x + Dropout(Attn(x)))``, ``x = LN(x + Dropout(W2 gelu(W1 x)))``, with
exact (erf) GELU, an embedding LayerNorm, and the MLM head
``dense -> gelu -> LN -> tied decoder + bias`` (HF ``BertLMPredictionHead`` /
``RobertaLMHead``). megatron-core's ``TransformerLayer`` is pre-LN, hence this
module (docs/model.md).

ALUM (docs/algorithm.md) perturbs the embedding output, so the forward pass is split:
``embed`` (word + position + type embeddings, LayerNorm, dropout) and
``forward_from_embeddings`` (encoder + head). ``forward`` is exactly the two
composed, so with δ = 0 the perturbed and clean passes are the same computation.

Layouts: inputs and the embedding output are batch-first (``[b, s]``, ``[b, s, h]``
with s this rank's sequence shard under sequence parallel); activations between
layers and between pipeline stages are ``[s, b, h]`` (megatron-core's); logits are
``[b, s, V / tp]``, split over the vocabulary across tensor-parallel ranks, or
``[n, V / tp]`` at the ``n`` positions a ``rows`` mask picks (the head then runs there only).

Attention takes no mask when the batch has no padding (packed pre-training sequences),
so SDPA may use its flash kernel, and a boolean padding mask otherwise
(``sdpa_attention_mask``).
"""
from __future__ import annotations

import contextlib
import math
from typing import Iterator, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .spec import ModelSpec


@contextlib.contextmanager
def init_rng(seed: int, block: int) -> Iterator[None]:
    """Initialise one block from its own seed, leaving the global RNG untouched.

    Seeding per block (embeddings = 0, layer i = i + 1, head = num_layers + 1)
    makes a pipeline stage that builds layers [a, b) produce the same weights as
    the unsplit model, and the last stage rebuild the tied embedding bit for bit.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + block)
        yield


def normal_init(std: float):
    """N(0, std²) initialisation (HF ``_init_weights``, Megatron ``init_method_normal``)."""
    def init(weight: torch.Tensor) -> None:
        nn.init.normal_(weight, mean=0.0, std=std)
    return init


def vocab_init(std: float, vocab_size: int):
    """N(0, std²) for real vocabulary rows, zeros for Megatron's padding rows.

    Independent of the padded size, so a TP=1 and a TP=2 model pad differently
    yet share every real row.
    """
    def init(weight: torch.Tensor) -> None:
        with torch.no_grad():
            weight.zero_()
            nn.init.normal_(weight[:vocab_size], mean=0.0, std=std)
    return init


def roberta_position_ids(input_ids: torch.Tensor, pad_token_id: int) -> torch.Tensor:
    """HF ``create_position_ids_from_input_ids`` (past_key_values_length = 0).

    Non-pad tokens count from ``pad_token_id + 1``; pad tokens get ``pad_token_id``.
    """
    mask = input_ids.ne(pad_token_id).int()
    incremental = torch.cumsum(mask, dim=1).type_as(mask) * mask
    return incremental.long() + pad_token_id


def extended_attention_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``[b, s]`` keep(1)/pad(0) -> additive ``[b, 1, 1, s]``: 0 or the dtype's min (HF)."""
    keep = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


def sdpa_attention_mask(attention_mask: torch.Tensor) -> Optional[torch.Tensor]:
    """``[b, s]`` keep(1)/pad(0) -> the ``attn_mask`` of ``scaled_dot_product_attention``.

    None when no position is padded (packed pre-training sequences): SDPA may then pick
    its flash kernel, which takes no mask. Otherwise a boolean ``[b, 1, 1, s]`` (True:
    attend), which broadcasts over heads and queries like HF's additive mask and gives
    the same softmax: a key at the dtype's minimum and a key at -inf both get weight 0
    (a fully padded sequence, whose outputs nothing reads, is the one exception).
    Deciding costs one device-to-host read of the ``[b, s]`` mask.
    """
    if bool(attention_mask.all()):
        return None
    return attention_mask[:, None, None, :].bool()


class Embeddings(nn.Module):
    """Word (vocab-parallel) + position + token-type embeddings, LayerNorm, dropout."""

    def __init__(self, config: ModelConfig, spec: ModelSpec, padded_vocab: int):
        super().__init__()
        self.config = config
        self.spec = spec
        self.word_embeddings = spec.word_embedding(
            padded_vocab, config.hidden_size, vocab_init(config.init_std, config.vocab_size))
        self.position_embeddings = nn.Embedding(config.max_position_embeddings,
                                                config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        normal_init(config.init_std)(self.position_embeddings.weight)
        normal_init(config.init_std)(self.token_type_embeddings.weight)
        self.layer_norm = spec.layer_norm(config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.config.family == "roberta":
            return roberta_position_ids(input_ids, self.config.pad_token_id)
        seq = input_ids.shape[1]
        return torch.arange(seq, device=input_ids.device).unsqueeze(0).expand_as(input_ids)

    def forward(self, input_ids: torch.Tensor, token_type_ids: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        if position_ids is None:
            position_ids = self.position_ids(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        words = self.word_embeddings(input_ids)                       # [s_local, b, h]
        # Position and type lookups are replicated; under SP each rank keeps its
        # sequence shard (the scatter's backward gathers the full gradient).
        extra = (self.position_embeddings(position_ids)
                 + self.token_type_embeddings(token_type_ids)).transpose(0, 1)
        x = words + self.spec.scatter_to_sequence(extra.contiguous())
        x = self.layer_norm(x)
        with self.spec.sequence_region_rng():
            x = self.dropout(x)
        return x


class SelfAttention(nn.Module):
    """Multi-head self-attention over this rank's heads (SDPA; ``sdpa_attention_mask``)."""

    def __init__(self, config: ModelConfig, spec: ModelSpec):
        super().__init__()
        if config.num_attention_heads % spec.tp_size:
            raise ValueError(f"num_attention_heads={config.num_attention_heads} is not "
                             f"divisible by the tensor-parallel size {spec.tp_size}")
        self.local_heads = config.num_attention_heads // spec.tp_size
        self.head_dim = config.head_dim
        self.spec = spec
        init = normal_init(config.init_std)
        # Fused QKV in megatron's per-head layout [heads, (q, k, v), head_dim] along the
        # output dimension, so a TP slice of the rows is whole heads.
        self.qkv = spec.column_linear(config.hidden_size, 3 * config.hidden_size, init)
        self.out = spec.row_linear(config.hidden_size, config.hidden_size, init)
        self.dropout_p = config.attention_dropout

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        qkv = self.qkv(x)                                             # [s, b, 3h/tp]
        s, b, _ = qkv.shape
        qkv = qkv.view(s, b, self.local_heads, 3, self.head_dim)
        q, k, v = (qkv[:, :, :, i].permute(1, 2, 0, 3) for i in range(3))  # [b, nh, s, d]
        dropout_p = self.dropout_p if self.training else 0.0
        # The per-rank RNG stream only when the attention draws random numbers: the
        # fork swaps generator states, which torch.compile cannot trace (a graph break).
        rng = self.spec.tensor_region_rng() if dropout_p > 0 else contextlib.nullcontext()
        with rng:
            ctx = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout_p,
                scale=1.0 / math.sqrt(self.head_dim))
        ctx = ctx.permute(2, 0, 1, 3).reshape(s, b, self.local_heads * self.head_dim)
        return self.out(ctx)                                          # [s_local, b, h]


class EncoderLayer(nn.Module):
    """One post-LN transformer layer (HF ``BertLayer``)."""

    def __init__(self, config: ModelConfig, spec: ModelSpec):
        super().__init__()
        if config.ffn_hidden_size % spec.tp_size:
            raise ValueError(f"ffn_hidden_size={config.ffn_hidden_size} is not divisible "
                             f"by the tensor-parallel size {spec.tp_size}")
        init = normal_init(config.init_std)
        self.spec = spec
        self.attention = SelfAttention(config, spec)
        self.attention_norm = spec.layer_norm(config.hidden_size, config.layer_norm_eps)
        self.ffn_in = spec.column_linear(config.hidden_size, config.ffn_hidden_size, init)
        self.ffn_out = spec.row_linear(config.ffn_hidden_size, config.hidden_size, init)
        self.ffn_norm = spec.layer_norm(config.hidden_size, config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        attn = self.attention(x, mask)
        with self.spec.sequence_region_rng():
            attn = self.dropout(attn)
        x = self.attention_norm(x + attn)
        ffn = self.ffn_out(F.gelu(self.ffn_in(x)))                    # exact erf GELU
        with self.spec.sequence_region_rng():
            ffn = self.dropout(ffn)
        return self.ffn_norm(x + ffn)


class MLMHead(nn.Module):
    """dense -> gelu -> LayerNorm -> tied decoder (vocab-parallel) + bias."""

    def __init__(self, config: ModelConfig, spec: ModelSpec, padded_vocab: int):
        super().__init__()
        self.dense = spec.replicated_linear(config.hidden_size, config.hidden_size,
                                            normal_init(config.init_std))
        self.layer_norm = spec.layer_norm(config.hidden_size, config.layer_norm_eps)
        self.spec = spec
        self.decoder = spec.output_linear(config.hidden_size, padded_vocab)
        # Megatron's padding columns are not words: give them no probability, so the
        # loss and the ALUM KL equal those of the unpadded HF model.
        start, end = spec.vocab_range(padded_vocab)
        # The padding columns are a suffix of every rank's vocabulary slice.
        self.first_pad_column = max(0, min(end, config.vocab_size) - start)
        self.has_pad_columns = self.first_pad_column < end - start

    def forward(self, x: torch.Tensor, decoder_weight: torch.Tensor,
                rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[s_local, b, h]`` -> ``[b, s, V/tp]`` logits, or ``[n, V/tp]`` at ``rows``.

        ``rows`` (``[b, s]`` bool) picks the positions the decoder is evaluated at, in
        ``logits[rows]`` order: MLM reads only the predicted ≈15% (as the authors'
        fairseq code does), and the ``[b, s, V]`` decoder output is most of the
        head's time and of a step's peak memory (docs/alum_cost.md).
        """
        if rows is not None and not self.spec.sequence_parallel:
            # dense, GELU and LayerNorm act on each row alone: pick the rows first, so
            # the whole head runs at them (under SP the rows are gathered after the
            # LayerNorm, whose parameters' gradients are summed over the shards).
            return self.decode(self.transform(x.transpose(0, 1)[rows]), decoder_weight)
        x = self.spec.gather_from_sequence(self.transform(x))           # [s, b, h]
        if rows is None:
            return self.decode(x, decoder_weight).transpose(0, 1)
        return self.decode(x.transpose(0, 1)[rows], decoder_weight)    # [n, h] -> [n, V/tp]

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """dense -> exact GELU -> LayerNorm (HF ``BertPredictionHeadTransform``)."""
        return self.layer_norm(F.gelu(self.dense(x)))

    def decode(self, x: torch.Tensor, decoder_weight: torch.Tensor) -> torch.Tensor:
        logits = self.decoder(x, decoder_weight)
        if self.has_pad_columns:
            # In place, on the suffix of padding columns only: no backward formula reads
            # the decoder's output (the matmul's and the bias add's read their inputs),
            # and a masked copy would write one more fresh [rows, V] tensor in every
            # pass and mask it again in backward (docs/alum_cost.md).
            logits[..., self.first_pad_column:].fill_(torch.finfo(logits.dtype).min)
        return logits


class BertMLM(nn.Module):
    """BERT/RoBERTa masked LM, or one pipeline stage of it.

    Args:
        config: the architecture.
        spec: the layer classes (``alum.parallel.layer_spec.tensor_parallel_spec``).
        pre_process: this stage holds the embeddings (first pipeline stage).
        post_process: this stage holds the MLM head (last pipeline stage).
        layer_range: [start, end) of the global layer indices on this stage.
        padded_vocab: vocabulary size after Megatron's padding (default: the
            config's for the spec's TP size).
    """

    def __init__(self, config: ModelConfig, spec: ModelSpec, *, pre_process: bool = True,
                 post_process: bool = True, layer_range: Optional[Tuple[int, int]] = None,
                 padded_vocab: Optional[int] = None):
        super().__init__()
        self.config = config
        self.spec = spec
        self.pre_process = pre_process
        self.post_process = post_process
        self.layer_range = layer_range or (0, config.num_layers)
        start, end = self.layer_range
        if not 0 <= start <= end <= config.num_layers:
            raise ValueError(f"layer_range {self.layer_range} outside [0, {config.num_layers}]")
        self.padded_vocab = padded_vocab or config.padded_vocab_size(spec.tp_size)
        seed = config.init_seed
        if pre_process:
            with init_rng(seed, 0):
                self.embeddings = Embeddings(config, spec, self.padded_vocab)
        layers = []
        for index in range(start, end):
            with init_rng(seed, index + 1):
                layers.append(EncoderLayer(config, spec))
        self.layers = nn.ModuleList(layers)
        if post_process:
            with init_rng(seed, config.num_layers + 1):
                self.head = MLMHead(config, spec, self.padded_vocab)
            if not pre_process:
                # Last stage without the embeddings: its own copy of the tied weight,
                # rebuilt from the embeddings' seed (so equal to the first stage's);
                # their gradients are summed over the embedding group each step.
                with init_rng(seed, 0):
                    word = spec.word_embedding(self.padded_vocab, config.hidden_size,
                                               vocab_init(config.init_std, config.vocab_size))
                self.output_word_embeddings = word
        for p in self.shared_embedding_parameters():
            p.shared_embedding = True
        self.input_tensor: Optional[torch.Tensor] = None
        self._mask_decision: Optional[tuple] = None   # see attention_mask()

    # -- the tied embedding --------------------------------------------------
    def word_embedding_weight(self) -> torch.Tensor:
        """The vocab-parallel word embedding weight ``[V/tp, h]`` (tied to the decoder)."""
        if self.pre_process:
            return self.embeddings.word_embeddings.weight
        return self.output_word_embeddings.weight

    def shared_embedding_parameters(self) -> List[nn.Parameter]:
        """The tied weight's copy on this stage (first or last), if any."""
        if self.pre_process or self.post_process:
            return [self.word_embedding_weight()]
        return []

    # -- pipeline -------------------------------------------------------------
    def set_input_tensor(self, input_tensor: Union[torch.Tensor, List[torch.Tensor], None]):
        """Megatron's hook: the activation received from the previous stage ``[s, b, h]``."""
        if isinstance(input_tensor, (list, tuple)):
            input_tensor = input_tensor[0] if input_tensor else None
        self.input_tensor = input_tensor

    # -- the split ALUM needs -------------------------------------------------
    def embed(self, input_ids: torch.Tensor, token_type_ids: Optional[torch.Tensor] = None,
              position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Embedding output ``[b, s_local, h]``: after the sum, LayerNorm and dropout.

        This is where ALUM adds δ. Under sequence parallel it is this rank's
        sequence shard. Returned as a batch-first view of the ``[s, b, h]`` tensor.
        """
        if not self.pre_process:
            raise RuntimeError("embed() needs the first pipeline stage (pre_process=True)")
        return self.embeddings(input_ids, token_type_ids, position_ids).transpose(0, 1)

    def forward_from_embeddings(self, embedding_output: Optional[torch.Tensor],
                                attention_mask: torch.Tensor,
                                rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encoder layers and head from the (possibly perturbed) embedding output.

        Args:
            embedding_output: ``[b, s_local, h]`` from ``embed`` (+ δ); ignored on a
                later pipeline stage, which reads ``set_input_tensor``'s activation.
            attention_mask: ``[b, s]``, 1 for tokens and 0 for padding (full sequence).
            rows: ``[b, s]`` bool, the positions to evaluate the MLM head at (usually
                ``labels != -100``); None: all of them.
        Returns:
            on the last stage ``[b, s, V/tp]`` logits, or ``[n, V/tp]`` equal to
            ``logits[rows]`` when ``rows`` is given; else ``[s_local, b, h]`` hidden
            states for the next stage.
        """
        if self.pre_process:
            if embedding_output is None:
                raise ValueError("the first stage needs the embedding output")
            x = embedding_output.transpose(0, 1).contiguous()
        else:
            if self.input_tensor is None:
                raise RuntimeError("a later pipeline stage needs set_input_tensor() first")
            x = self.input_tensor
        mask = self.attention_mask(attention_mask)
        for layer in self.layers:
            x = layer(x, mask)
        if not self.post_process:
            return x
        return self.head(x, self.word_embedding_weight(), rows)

    def forward(self, input_ids: Optional[torch.Tensor], attention_mask: torch.Tensor,
                token_type_ids: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None,
                rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``forward_from_embeddings(embed(...), rows=rows)`` (the clean pass)."""
        embeds = self.embed(input_ids, token_type_ids, position_ids) if self.pre_process else None
        return self.forward_from_embeddings(embeds, attention_mask, rows)

    def attention_mask(self, attention_mask: torch.Tensor) -> Optional[torch.Tensor]:
        """``sdpa_attention_mask`` of the batch, decided once per batch: ALUM's passes
        hand the same ``[b, s]`` tensor to every forward, and the decision (a host read
        of the mask) is remembered for it while it is unmodified."""
        cached = self._mask_decision
        if cached is not None and cached[0] is attention_mask \
                and cached[1] == attention_mask._version:
            return cached[2]
        mask = sdpa_attention_mask(attention_mask)
        self._mask_decision = (attention_mask, attention_mask._version, mask)
        return mask

    # -- loss -----------------------------------------------------------------
    def mlm_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy over predicted tokens (labels != -100), vocab-parallel.

        ``logits`` ``[..., V/tp]`` and ``labels`` ``[...]``: the full ``[b, s]`` positions,
        or the rows the head was evaluated at (``forward(rows=labels != -100)`` with
        ``labels[rows]``). Only the predicted rows are selected (a copy): megatron's cross entropy
        subtracts the max in place, which must not touch the caller's logits (ALUM
        reuses them). Returns 0 (with a graph) when nothing is predicted.
        """
        selected = labels.ne(-100)
        if not bool(selected.any()):
            return (logits * 0.0).sum()   # not logits.sum()*0: padded columns sum to -inf
        rows = logits[selected]
        losses = self.spec.cross_entropy(rows.float(), labels[selected])
        return losses.mean()
