"""Workers start cleanly from a process that already ran threads.

A forked worker inherits whatever locks the parent's threads held at the fork:
after the Rust tokenizer's thread pool and torch's intra-op threads have run
(a library call after other tokenizing, a test suite), forked workers hung in
their first encode_batch. The pool starts its workers from a fresh server
instead; this runs that situation in a subprocess with a time limit.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import os, sys
    def main(tok_dir, out):
        os.environ["TOKENIZERS_PARALLELISM"] = "true"
        from tokenizers import Tokenizer
        import torch
        tok = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
        tok.encode_batch(["warm the thread pool %d" % i for i in range(5000)])
        torch.set_num_threads(2)
        x = torch.randn(256, 256)
        (x @ x).sum()
        from alum.tools.preprocess import build_indexed_dataset
        build_indexed_dataset([os.path.join(out, "in.jsonl")], tok_dir,
                              os.path.join(out, "two"), workers=2, no_progress=True)
    if __name__ == "__main__":
        main(sys.argv[1], sys.argv[2])
""")


@pytest.mark.slow
def test_two_workers_after_tokenizer_and_torch_threads(tmp_path):
    from alum.finetune.demo import demo_model_dir

    tok_dir = demo_model_dir()
    # ~3 MB: more than one byte range per worker at the default range sizes.
    with open(tmp_path / "in.jsonl", "w") as f:
        for i in range(6000):
            f.write(json.dumps({"text": f"document {i} " + "with a few words " * 30}) + "\n")
    (tmp_path / "run.py").write_text(SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, str(tmp_path / "run.py"), tok_dir, str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from alum.tools.preprocess import build_indexed_dataset

    build_indexed_dataset([str(tmp_path / "in.jsonl")], tok_dir, str(tmp_path / "one"),
                          workers=1, no_progress=True)
    for ext in (".bin", ".idx"):
        assert (tmp_path / ("two" + ext)).read_bytes() == (tmp_path / ("one" + ext)).read_bytes()
