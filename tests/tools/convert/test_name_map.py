"""The name map: it covers every parameter of the model, its transforms invert, and the
table in docs/convert.md is the map itself."""
import os

import pytest
import torch

from alum.models.hf_state_dict import (NAME_MAP_VERSION, entries, markdown_table, merge_qkv,
                                       split_qkv)
from alum.tools.convert.sharding import local_name, shard_shape, stage_entries

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))


def test_qkv_split_follows_megatrons_per_head_layout():
    heads, head_dim, hidden = 3, 2, 5
    # Row r of the fused weight carries the value r: rows are [head, (q, k, v), head_dim].
    fused = torch.arange(3 * heads * head_dim, dtype=torch.float32)[:, None].expand(-1, hidden)
    q, k, v = split_qkv(fused, heads)
    for j, part in enumerate((q, k, v)):
        for head in range(heads):
            for r in range(head_dim):
                assert part[head * head_dim + r, 0] == head * 3 * head_dim + j * head_dim + r
    assert torch.equal(merge_qkv(q, k, v, heads), fused)
    bias = torch.randn(3 * heads * head_dim)
    assert torch.equal(merge_qkv(*split_qkv(bias, heads), num_heads=heads), bias)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_map_covers_every_parameter_with_its_shape(family, single_process_parallel):
    from alum.models import ModelConfig
    from alum.parallel import ParallelConfig, build_model

    cfg = ModelConfig.named("tiny", family, vocab_size=1030)
    (model,) = build_model(cfg, ParallelConfig())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if v is not None}
    mapped = {local_name(e, cfg.num_layers, 1): shard_shape(e, cfg, 1)
              for e in stage_entries(cfg, 1, 0)}
    assert mapped == ours
    hf_names = [n for e in entries(family, cfg.num_layers) for n in e.hf]
    assert len(hf_names) == len(set(hf_names))


def test_docs_show_the_map_and_its_version():
    with open(os.path.join(ROOT, "docs", "convert.md")) as f:
        text = f.read()
    assert markdown_table() in text
    assert f"NAME_MAP_VERSION = {NAME_MAP_VERSION}" in text
