"""alum-preprocess: corpus files -> megatron-core indexed dataset (PREFIX.bin/.idx).

    alum-preprocess --input wiki_dump/ --tokenizer tok/ --output-prefix data/wiki \
        --workers 8 --split-sentences

Streams every input (memory stays bounded whatever the corpus size), tokenizes
shards (and ranges of large JSON lines files: line-aligned byte ranges, or
runs of BGZF / multi-frame zstd members) in parallel into PREFIX.work/, then
merges them in input order into PREFIX.bin + PREFIX.idx in megatron-core's
indexed-dataset format. See docs/data.md for formats, the bad-input policy
and throughput.
"""
import argparse
import json
import os
import shutil
import sys
import time

from alum.atomic_write import atomic_write_text
from alum.output_errors import (OutputError, check_writable_dir, describe_output_error,
                                disk_is_full, no_space_message)

from .indexed_output import merge_datasets, merge_parts, smallest_dtype
from .readers import FORMATS, REASONS, BadInputError, SkipLog, plan_shards, split_for_workers

DESCRIPTION = __doc__.split("\n\n")[0] + """

Input formats are detected per file by content and name: JSON lines (plain,
.gz, .bz2, .xz, .zst); WikiExtractor output directories (wiki_NN files, JSON
or <doc> text mode); OpenWebText (.tar of .xz subset archives, a directory of
those .xz files, or extracted NNNNNNN-<hex>.txt files, one document each);
plain text with blank-line-separated documents; a `datasets` save_to_disk
directory; parquet files.

Each document becomes one sequence (or one per sentence with
--split-sentences, document boundaries kept) of token ids exactly as the
tokenizer gives them, without special tokens, stored in the smallest dtype
that holds the vocabulary (uint8, uint16 or int32).
"""

BAD_INPUT_POLICY = """\
bad input policy:
  Damaged input is skipped and counted (summary and PREFIX.summary.json):
  truncated/corrupt compressed file (documents before the damage are kept),
  invalid UTF-8, malformed JSON line or <doc> markup, missing key (or a
  non-string value). With --strict these stop the run with an error naming
  the file and line instead. Empty documents (only whitespace, or no
  tokens) are always skipped and counted, even with --strict.

  Inputs that hold no document at all are an error (nothing is written)
  unless --allow-empty is given.

outputs:
  Files are written under temporary names and renamed only on success
  (index last), so a failed or interrupted run leaves no PREFIX.bin/.idx
  pair. Finished pieces stay in PREFIX.work/ and a rerun with the same
  inputs, tokenizer and options resumes from them (byte ranges of a large
  file only with the same --workers, which decides the cut points); a
  PREFIX.work/ without finished pieces is removed. A successful run removes
  PREFIX.work/ and replaces any older PREFIX.bin/.idx. An output that cannot
  be written (a read-only directory, a full disk) is one error line naming
  the path and the cause ("no space left on device" with the space needed
  and free).
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alum-preprocess", description=DESCRIPTION, epilog=BAD_INPUT_POLICY,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", nargs="+", required=True, metavar="PATH",
                   help="input files or directories (directories are walked recursively in "
                        "sorted order); with --merge: prefixes of indexed datasets to merge")
    p.add_argument("--tokenizer", metavar="DIR",
                   help="directory loadable by transformers.AutoTokenizer.from_pretrained "
                        "(e.g. made by alum-tokenizer); required unless --merge")
    p.add_argument("--output-prefix", required=True, metavar="PREFIX",
                   help="write PREFIX.bin and PREFIX.idx (and PREFIX.summary.json)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes, each tokenizing shards (files, archive members, "
                        "row groups) on one thread; large uncompressed JSON lines files are cut "
                        "into line-aligned byte ranges, and BGZF or multi-frame zstd ones at "
                        "member boundaries, so that N workers share one file; output bytes do "
                        "not depend on N (default: 1)")
    p.add_argument("--split-sentences", action="store_true",
                   help="one sequence per sentence (regex splitter, no download) instead of one "
                        "per document; document boundaries are kept in the index")
    p.add_argument("--json-key", default="text", metavar="KEY",
                   help="key (JSON lines, WikiExtractor JSON) or column (parquet, datasets) "
                        "holding the text (default: text)")
    p.add_argument("--format", default="auto", choices=FORMATS,
                   help="input format; 'auto' detects it per file by content and name "
                        "(default: auto)")
    p.add_argument("--hf-split", metavar="NAME",
                   help="for a saved DatasetDict: use only this split (default: all splits "
                        "in order)")
    p.add_argument("--strict", action="store_true",
                   help="stop with an error naming file and line at the first damaged input "
                        "instead of skipping and counting it (empty documents are still skipped)")
    p.add_argument("--merge", action="store_true",
                   help="merge existing indexed datasets given by --input (prefixes, .bin/.idx "
                        "paths, or directories holding them) into --output-prefix, in order; "
                        "no tokenizer needed")
    p.add_argument("--no-merge", action="store_true",
                   help="keep one dataset per shard, PREFIX_00000.bin/.idx, ... instead of "
                        "merging them (merge later with --merge)")
    p.add_argument("--no-resume", action="store_true",
                   help="ignore finished shards left in PREFIX.work/ by an interrupted run and "
                        "redo everything")
    p.add_argument("--allow-empty", action="store_true",
                   help="write a dataset of 0 documents when the inputs hold none (without "
                        "it, that is an error and nothing is written)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar (the summary is still printed to stderr)")
    return p


def _dataset_prefixes(paths):
    prefixes = []
    for path in paths:
        if os.path.isdir(path):
            prefixes += sorted(os.path.join(path, n[:-4]) for n in os.listdir(path) if n.endswith(".idx"))
        else:
            prefixes.append(path[:-4] if path.endswith((".bin", ".idx")) else path)
    for prefix in prefixes:
        if not (os.path.exists(prefix + ".bin") and os.path.exists(prefix + ".idx")):
            raise FileNotFoundError(f"not an indexed dataset (missing .bin or .idx): {prefix}")
    return prefixes


def _run_merge(args) -> int:
    prefixes = _dataset_prefixes(args.input)
    started = time.perf_counter()
    dtype = merge_datasets(prefixes, args.output_prefix)
    print(f"merged {len(prefixes)} datasets into {args.output_prefix}.bin/.idx "
          f"({dtype.__name__}) in {time.perf_counter() - started:.1f}s", file=sys.stderr)
    return 0


class Progress:
    """tqdm bar counting documents, with tokens and MB/s in its postfix."""

    def __init__(self, n_shards: int, enabled: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=None, unit=" docs", desc=f"{n_shards} shards", disable=not enabled,
                        dynamic_ncols=True, file=sys.stderr)
        self.tokens = 0
        self.bytes = 0
        self.started = time.perf_counter()

    def __call__(self, docs, tokens, nbytes):
        self.tokens += tokens
        self.bytes += nbytes
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.set_postfix_str(f"{self.tokens:,} tokens, {self.bytes / 1e6 / elapsed:.2f} MB/s",
                                 refresh=False)
        self.bar.update(docs)

    def close(self):
        self.bar.close()


def _summary(args, shards, pieces, results, seconds, dtype, outputs) -> dict:
    log = SkipLog()
    for r in results:
        log.merge(SkipLog.from_dict(r.skips))
    totals = {k: sum(getattr(r, k) for r in results)
              for k in ("documents", "sequences", "tokens", "text_bytes")}
    return {
        "inputs": list(args.input), "tokenizer": args.tokenizer, "shards": len(shards),
        "pieces": len(pieces), "resumed_pieces": sum(r.resumed for r in results),
        "workers": args.workers,
        "split_sentences": args.split_sentences, "dtype": dtype.__name__, **totals,
        "seconds": seconds, "mb_per_s": totals["text_bytes"] / 1e6 / max(seconds, 1e-9),
        "tokens_per_s": totals["tokens"] / max(seconds, 1e-9),
        "skipped": {reason: log.counts.get(reason, 0) for reason in REASONS},
        "skipped_examples": log.examples, "outputs": outputs,
    }


def _print_summary(s: dict) -> None:
    skipped = ", ".join(f"{k} {v}" for k, v in s["skipped"].items() if v) or "none"
    lines = [
        f"documents {s['documents']:,}  sequences {s['sequences']:,}  tokens {s['tokens']:,}  "
        f"text {s['text_bytes'] / 1e6:.2f} MB  ({s['dtype']})",
        f"time {s['seconds']:.1f}s  {s['mb_per_s']:.2f} MB/s  {s['tokens_per_s']:,.0f} tokens/s  "
        f"shards {s['shards']}, pieces {s['pieces']} (resumed {s['resumed_pieces']})  "
        f"workers {s['workers']}",
        f"skipped documents: {skipped}",
    ]
    lines += [f"  e.g. {example}" for example in s["skipped_examples"]]
    lines += [f"wrote {path}" for path in s["outputs"]]
    print("\n".join(lines), file=sys.stderr)


def run(args) -> int:
    from .preprocess_shard import ShardJob, fingerprint, load_tokenizer, tokenizer_digest, vocab_size
    from .shard_pool import run_jobs

    started = time.perf_counter()
    try:
        tokenizer = load_tokenizer(args.tokenizer)
    except Exception as err:  # tokenizers/transformers raise many types for a bad directory
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise BadInputError(f"cannot load a tokenizer from {args.tokenizer}: {first}") from err
    dtype = smallest_dtype(vocab_size(tokenizer))
    shards = plan_shards(args.input, args.format, args.json_key, args.hf_split)
    if not shards:
        raise BadInputError(f"no input documents found in {' '.join(args.input)}")
    pieces = split_for_workers(shards, args.workers)
    work_dir = args.output_prefix + ".work"
    if args.no_resume and os.path.isdir(work_dir):
        shutil.rmtree(work_dir)
    os.makedirs(work_dir, exist_ok=True)
    digest = tokenizer_digest(args.tokenizer)
    options = {"json_key": args.json_key, "split_sentences": args.split_sentences,
               "strict": args.strict, "dtype": dtype.__name__}
    jobs = [ShardJob(index=i, shard=piece, tokenizer_dir=args.tokenizer, json_key=args.json_key,
                     split_sentences=args.split_sentences, strict=args.strict,
                     dtype_name=dtype.__name__, out_prefix=os.path.join(work_dir, f"part-{i:05d}"),
                     fingerprint=fingerprint(piece, digest, options))
             for i, (_, piece) in enumerate(pieces)]
    progress = Progress(len(shards), enabled=not args.no_progress)
    try:
        results = run_jobs(jobs, args.workers, progress)
    except OSError as err:
        if disk_is_full(err, work_dir):
            raise OutputError(no_space_message("tokenized pieces in", work_dir, None)) from err
        raise
    finally:
        progress.close()
    if not any(r.documents for r in results) and not args.allow_empty:
        raise BadInputError(f"no documents in {' '.join(args.input)} (every input is empty or "
                            f"was skipped); pass --allow-empty to write an empty dataset")
    try:
        outputs = _merge_outputs(args, jobs, pieces, shards, dtype)
    except OSError as err:
        needed = sum(os.path.getsize(job.out_prefix + ".bin") for job in jobs
                     if os.path.isfile(job.out_prefix + ".bin"))
        raise OutputError(describe_output_error(err, "dataset", args.output_prefix + ".bin",
                                                needed)) from err
    summary = _summary(args, shards, pieces, results, time.perf_counter() - started, dtype,
                       [o + ext for o in outputs for ext in (".bin", ".idx")])
    atomic_write_text(args.output_prefix + ".summary.json", json.dumps(summary, indent=1))
    shutil.rmtree(work_dir, ignore_errors=True)
    _print_summary(summary)
    return 0


def _merge_outputs(args, jobs, pieces, shards, dtype):
    """The pieces merged into PREFIX.bin/.idx (or one dataset per shard); their prefixes."""
    if args.no_merge:
        outputs = []
        for shard_index in range(len(shards)):
            final = f"{args.output_prefix}_{shard_index:05d}"
            merge_parts([job.out_prefix for job, (owner, _) in zip(jobs, pieces) if owner == shard_index],
                        final, dtype)
            outputs.append(final)
    else:
        merge_parts([job.out_prefix for job in jobs], args.output_prefix, dtype)
        outputs = [args.output_prefix]
    return outputs


def build_indexed_dataset(inputs, tokenizer: str, output_prefix: str, **options) -> str:
    """alum-preprocess as a library call: ``inputs`` tokenized with ``tokenizer`` into
    ``output_prefix``.bin/.idx. ``options`` are the command's other options by their
    argument names (``workers``, ``split_sentences``, ``no_resume``, ...), with the
    command's defaults. Bad input raises ``BadInputError`` / ``FileNotFoundError``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")   # as main() does
    args = build_parser().parse_args(["--input", *inputs, "--tokenizer", tokenizer,
                                      "--output-prefix", output_prefix])
    for name, value in options.items():
        if name in ("input", "tokenizer", "output_prefix", "merge") or not hasattr(args, name):
            raise TypeError(f"build_indexed_dataset: unknown option {name!r}")
        setattr(args, name, value)
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
    run(args)
    return output_prefix


def main(argv=None) -> int:
    # One Rust thread per worker: scaling comes from --workers, and per-worker
    # throughput stays measurable. The user's own setting wins.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    if args.merge:
        try:
            return _run_merge(args)
        except (FileNotFoundError, ValueError, OutputError) as e:
            print(f"alum-preprocess: error: {e}", file=sys.stderr)
            return 1
        except OSError as e:
            print(f"alum-preprocess: error: "
                  f"{describe_output_error(e, 'dataset', args.output_prefix + '.bin')}",
                  file=sys.stderr)
            return 1
    if not args.tokenizer:
        build_parser().error("--tokenizer is required (unless --merge)")
    if args.workers < 1:
        build_parser().error("--workers must be at least 1")
    parent = os.path.dirname(os.path.abspath(args.output_prefix))
    try:
        check_writable_dir(parent, "output directory")
        return run(args)
    except (BadInputError, FileNotFoundError, OutputError) as e:
        print(f"alum-preprocess: error: {e}", file=sys.stderr)
    except OSError as e:
        print(f"alum-preprocess: error: "
              f"{describe_output_error(e, 'dataset', args.output_prefix + '.bin')}",
              file=sys.stderr)
    _report_work_dir(args.output_prefix + ".work")
    return 1


def _report_work_dir(work_dir: str) -> None:
    """After a failure: say where finished pieces are kept, or remove a work directory
    that holds none (it would only suggest a resume that has nothing to resume)."""
    if not os.path.isdir(work_dir):
        return
    finished = [n for n in os.listdir(work_dir) if n.endswith(".done.json")]
    if finished:
        print(f"alum-preprocess: {len(finished)} finished pieces kept in {work_dir}/; "
              "rerunning resumes from them", file=sys.stderr)
    else:
        shutil.rmtree(work_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
