"""A dependency-free English sentence splitter (no model download).

Megatron-LM splits with nltk's punkt, whose model must be downloaded; this
machine may not reach a hub at run time. A regex is good enough for building
sentence-level sequences: split at `.`, `!` or `?` (plus closing quotes or
brackets) followed by space and an upper-case letter, digit or opening quote,
unless the word before the period is a known abbreviation or a single letter
(an initial, "J. R. R. Tolkien"). Line breaks always end a sentence, since
WikiExtractor and OpenWebText put paragraphs on separate lines.
"""
import re

_ABBREVIATIONS = frozenset("""
mr mrs ms dr prof sr jr st mt ft vs etc e.g i.e cf al fig figs no nos vol vols ed eds
approx dept est inc ltd co corp bros gen gov lt col sgt capt cmdr adm rev hon pres
jan feb mar apr jun jul aug sep sept oct nov dec u.s u.k a.m p.m ph.d b.a m.a
""".split())

_BOUNDARY = re.compile(r"""([.!?]+["'\u201d\u2019)\]]*)\s+(?=["'\u201c\u2018(\[]?[A-Z0-9])""")
_TRAILING = ".!?\"')]\u201d\u2019"


def _is_abbreviation(candidate: str) -> bool:
    words = candidate.split()
    if not words:
        return False
    word = words[-1].lstrip("\"'(\u201c\u2018[").rstrip(_TRAILING).lower()
    return word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha())


def split_sentences(text: str):
    """Sentences of `text`, stripped, in order; never returns empty strings."""
    sentences = []
    for paragraph in text.split("\n"):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        start = 0
        for match in _BOUNDARY.finditer(paragraph):
            candidate = paragraph[start:match.end(1)]
            if match.group(1).startswith(".") and _is_abbreviation(candidate):
                continue
            sentences.append(candidate.strip())
            start = match.end()
        tail = paragraph[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences
