"""Tokenizing one piece of the input into a part (runs in a worker).

A piece is a shard (file, archive member, row group) or a line-aligned byte
range of a large file. Each piece's output depends only on its content, the
tokenizer and the options, never on which worker ran it or when; merging
the parts in piece order therefore gives the same bytes for any --workers.

A finished piece also gets a small JSON marker holding a fingerprint of its
input files (and byte range), tokenizer and options. An interrupted run can
then be resumed: pieces whose marker matches are not redone.

Workers import numpy and the `tokenizers` library only (parts are written
with numpy: indexed_output.PartWriter); torch and megatron-core are imported
by the parent for the final merge.
"""
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from alum.atomic_write import atomic_write_text

from .indexed_output import PART_INDEX, PartWriter, remove_quietly
from .readers import Shard, SkipLog, iter_documents
from .sentence_split import split_sentences

BATCH_DOCS = 256
BATCH_CHARS = 1 << 21  # bounds memory per batch whatever the documents' sizes
PROGRESS_EVERY_S = 0.5
FORMAT_VERSION = 2  # bump when the shard output for the same input changes


@dataclass(frozen=True)
class ShardJob:
    index: int
    shard: Shard
    tokenizer_dir: str
    json_key: str
    split_sentences: bool
    strict: bool
    dtype_name: str
    out_prefix: str  # where this shard's dataset goes (inside the work dir)
    fingerprint: str = ""


@dataclass
class ShardResult:
    index: int
    documents: int = 0
    sequences: int = 0
    tokens: int = 0
    text_bytes: int = 0
    seconds: float = 0.0
    resumed: bool = False
    skips: dict = field(default_factory=lambda: {"counts": {}, "examples": []})


_TOKENIZERS = {}


def load_tokenizer(tokenizer_dir: str):
    """The directory's tokenizer, cached per process.

    A directory with a tokenizer.json (alum-tokenizer writes one, as does
    save_pretrained of any fast tokenizer) is loaded with the `tokenizers`
    library: that file is the whole fast tokenizer that AutoTokenizer would
    wrap, and loading it needs neither transformers nor torch (seconds of
    start-up per process). Other directories go through AutoTokenizer.
    """
    if tokenizer_dir not in _TOKENIZERS:
        path = os.path.join(tokenizer_dir, "tokenizer.json")
        if os.path.isfile(path):
            from tokenizers import Tokenizer

            tokenizer = backend = Tokenizer.from_file(path)
        else:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
            backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:
            # A tokenizer.json saved for a model input (sentence-transformers ships them so)
            # carries truncation and fixed padding: documents would be cut to its length
            # and padded with [PAD] ids. Whole documents are wanted here.
            backend.no_truncation()
            backend.no_padding()
        _TOKENIZERS[tokenizer_dir] = tokenizer
    return _TOKENIZERS[tokenizer_dir]


def vocab_size(tokenizer) -> int:
    """Number of ids, added tokens included (len() of the transformers tokenizer)."""
    if hasattr(tokenizer, "get_vocab_size"):
        return tokenizer.get_vocab_size(with_added_tokens=True)
    return len(tokenizer)


def encode_batch(tokenizer, texts):
    """Token ids without special tokens, as `tokenizer(text)` gives them.

    The Rust tokenizer is called directly: same ids, without the transformers
    wrapper's per-call overhead and its "longer than model_max_length"
    warnings (documents are meant to be longer than a model input); without
    offsets when the library can skip them (they are not stored).
    """
    backend = tokenizer if hasattr(tokenizer, "encode_batch") else getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [e.ids for e in encode(texts, add_special_tokens=False)]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def fingerprint(shard: Shard, tokenizer_digest: str, options: dict) -> str:
    """Hash of what decides a shard's output; stats of its files stand in for content."""
    paths = [shard.path] + [p for p in shard.items if isinstance(p, str)]
    stats = []
    for path in paths:
        st = os.stat(path)
        stats.append((path, st.st_size, st.st_mtime_ns) if os.path.isfile(path) else (path,))
    blob = json.dumps([FORMAT_VERSION, asdict(shard), stats, tokenizer_digest, options],
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


# Model weights often share the tokenizer's directory (a model's own folder);
# they do not change its ids and hashing them costs a read of the whole model.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx")


def tokenizer_digest(tokenizer_dir: str) -> str:
    """Hash of the directory's tokenizer files (everything but model weights)."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(tokenizer_dir)):
        path = os.path.join(tokenizer_dir, name)
        if os.path.isfile(path) and not name.endswith(_WEIGHT_SUFFIXES):
            h.update(name.encode())
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def marker_path(job: ShardJob) -> str:
    return job.out_prefix + ".done.json"


def finished_result(job: ShardJob):
    """The recorded result if this shard was already done with the same fingerprint."""
    path = marker_path(job)
    if not (os.path.exists(path) and os.path.exists(job.out_prefix + ".bin")
            and os.path.exists(job.out_prefix + PART_INDEX)):
        return None
    try:
        with open(path) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    if record.get("fingerprint") != job.fingerprint:
        return None
    result = ShardResult(**record["result"])
    result.resumed = True
    return result


def _write_marker(job: ShardJob, result: ShardResult) -> None:
    atomic_write_text(marker_path(job), json.dumps({
        "fingerprint": job.fingerprint, "shard": job.shard.describe(), "result": asdict(result)}))


def _batches(documents):
    batch, chars = [], 0
    for where, text in documents:
        batch.append((where, text))
        chars += len(text)
        if len(batch) >= BATCH_DOCS or chars >= BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def process_shard(job: ShardJob, progress=None) -> ShardResult:
    """Tokenize `job.shard` into `job.out_prefix`.{bin,idx}; `progress(docs, tokens, bytes)`."""
    done = finished_result(job)
    if done is not None:
        if progress:
            progress(done.documents, done.tokens, done.text_bytes)
        return done
    started = time.perf_counter()
    tokenizer = load_tokenizer(job.tokenizer_dir)
    dtype = getattr(np, job.dtype_name)
    limit = np.iinfo(dtype).max
    log = SkipLog(strict=job.strict)
    result = ShardResult(index=job.index)
    remove_quietly(marker_path(job))
    last_report, reported = time.perf_counter(), [0, 0, 0]
    with PartWriter(job.out_prefix, dtype) as writer:
        for batch in _batches(iter_documents(job.shard, job.json_key, log)):
            pieces, owners = [], []  # texts to encode, and which document each belongs to
            for i, (where, text) in enumerate(batch):
                parts = split_sentences(text) if job.split_sentences else [text]
                if not text.strip() or not parts:
                    log.skip("empty", where)
                    continue
                pieces += parts
                owners += [i] * len(parts)
            ids = encode_batch(tokenizer, pieces)
            by_doc, has_text = {}, set(owners)
            for owner, seq in zip(owners, ids):
                if seq:  # e.g. a sentence of characters the tokenizer drops
                    by_doc.setdefault(owner, []).append(np.asarray(seq, dtype=np.int64))
            for i, (where, text) in enumerate(batch):
                if i not in by_doc:
                    if i in has_text:
                        log.skip("empty", where, "no tokens")
                    continue
                sequences = by_doc[i]
                top = max(int(s.max()) for s in sequences)
                if top > limit:
                    raise ValueError(f"{where}: token id {top} does not fit {job.dtype_name}")
                writer.add_document([s.astype(dtype) for s in sequences])
                result.documents += 1
                result.sequences += len(sequences)
                result.tokens += sum(len(s) for s in sequences)
                result.text_bytes += len(text.encode("utf-8"))
            now = time.perf_counter()
            if progress and now - last_report >= PROGRESS_EVERY_S:
                progress(result.documents - reported[0], result.tokens - reported[1],
                         result.text_bytes - reported[2])
                reported = [result.documents, result.tokens, result.text_bytes]
                last_report = now
    if progress:
        progress(result.documents - reported[0], result.tokens - reported[1],
                 result.text_bytes - reported[2])
    result.seconds = time.perf_counter() - started
    result.skips = log.to_dict()
    _write_marker(job, result)
    return result
