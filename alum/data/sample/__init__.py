"""A small public-domain English corpus shipped with the package.

Chapters of seven books of the King James Bible (1611, public domain; from
Debian's `bible-kjv-text`), one document per chapter, stored in the formats
`alum-preprocess` reads. Used by the tests and by quick end-to-end runs.
Rebuilt by `python -m alum.data.sample._build`.
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))

_PATHS = {
    "wiki": "wiki",  # WikiExtractor --json output directory (AA/wiki_NN)
    "openwebtext": os.path.join("openwebtext", "openwebtext.tar"),  # tar of .xz subsets
    "text": "kjv_ruth.txt",  # one book, blank-line-separated documents
}
FORMATS = tuple(_PATHS)


def sample_corpus_path(fmt: str = "wiki") -> str:
    """Path of the sample corpus in format `fmt` ("wiki", "openwebtext" or "text")."""
    if fmt not in _PATHS:
        raise ValueError(f"unknown sample format {fmt!r}; choose from {FORMATS}")
    return os.path.join(HERE, _PATHS[fmt])
