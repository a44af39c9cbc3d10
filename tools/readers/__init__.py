"""Streaming readers for the corpus formats `alum-preprocess` and
`alum-tokenizer` accept. `plan_shards` lists the work, `iter_documents`
yields (where, text) for one shard; damaged input goes through a SkipLog."""
from .bad_input import REASONS, BadInputError, SkipLog
from .shards import FORMATS, Shard, plan_shards, split_for_workers


def iter_documents(shard: Shard, json_key: str, log: SkipLog):
    """(where, text) for every document of `shard`, in file order.

    `where` names the file and line (or archive member, or row) for messages.
    Empty documents are passed through; the caller decides (it also knows
    whether a document tokenizes to nothing).
    """
    from . import arrow, openwebtext, plaintext, wikiextractor
    from .jsonl import iter_json_line_range, iter_json_lines, iter_json_member_range

    kind = shard.kind
    if kind == "jsonl":
        return iter_json_lines(shard.path, json_key, log)
    if kind == "jsonl-range":
        return iter_json_line_range(shard.path, shard.start, shard.stop, json_key, log)
    if kind == "jsonl-members":
        previous = shard.items[0] if shard.items else None
        return iter_json_member_range(shard.path, shard.start, shard.stop, json_key, log, previous)
    if kind == "wiki":
        return wikiextractor.iter_wiki_documents(shard.path, json_key, log)
    if kind == "text":
        return plaintext.iter_paragraph_documents(shard.path, log)
    if kind == "txt-files":
        return plaintext.iter_file_documents(shard.items, log)
    if kind == "owt-subset":
        return openwebtext.iter_subset_file_documents(shard.path, log)
    if kind == "tar-members":
        return openwebtext.iter_tar_member_documents(shard.path, shard.items, log)
    if kind == "hf-disk":
        return arrow.iter_hf_documents(shard.path, shard.split, shard.start, shard.stop, json_key, log)
    if kind == "parquet":
        return arrow.iter_parquet_documents(shard.path, shard.start, shard.stop, json_key, log)
    if kind == "error":
        log.skip("truncated", shard.path, shard.error)
        return iter(())
    raise ValueError(f"unknown shard kind {kind!r}")


def iter_texts(paths, fmt="auto", json_key="text", hf_split=None, log=None):
    """Every non-empty document text of `paths`, in order (tokenizer training)."""
    log = log if log is not None else SkipLog()
    for shard in plan_shards(paths, fmt, json_key, hf_split):
        for where, text in iter_documents(shard, json_key, log):
            if text.strip():
                yield text
            else:
                log.skip("empty", where)


__all__ = ["FORMATS", "REASONS", "BadInputError", "Shard", "SkipLog", "iter_documents",
           "iter_texts", "plan_shards", "split_for_workers"]
