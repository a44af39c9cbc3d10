"""What happens to damaged input: skip and count, or (with --strict) stop.

Policy (also in `alum-preprocess --help` and docs/data.md):

- truncated / corrupt compressed file: documents read before the damage are
  kept, the partial one and the rest of the file are skipped (counted once);
  in a BGZF or multi-frame zstd file only the lines holding the damage are,
  and reading resumes after the damaged member (compressed_members.py);
- invalid UTF-8: the document is skipped;
- malformed JSON line, or malformed WikiExtractor `<doc>` markup: skipped;
- missing key (or a non-string value under it): skipped;
- empty document (nothing but whitespace, or no tokens): always skipped and
  counted, even with --strict, because real dumps are full of them
  (WikiExtractor writes one for every redirect-like page).

With --strict every kind except "empty" raises BadInputError naming the file
and line (or archive member / row).
"""
from collections import Counter
from dataclasses import dataclass, field

REASONS = ("truncated", "invalid_utf8", "malformed", "missing_key", "empty")
MAX_EXAMPLES = 5


class BadInputError(Exception):
    """Damaged input under --strict; the message names file and line."""


@dataclass
class SkipLog:
    """Counts of skipped documents per reason, with the first few locations."""

    strict: bool = False
    counts: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)

    def skip(self, reason: str, where: str, detail: str = "") -> None:
        assert reason in REASONS, reason
        message = f"{where}: {reason}" + (f": {detail}" if detail else "")
        if self.strict and reason != "empty":
            raise BadInputError(message)
        self.counts[reason] += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(message)

    def merge(self, other: "SkipLog") -> None:
        self.counts.update(other.counts)
        room = MAX_EXAMPLES - len(self.examples)
        self.examples.extend(other.examples[:max(room, 0)])

    def to_dict(self) -> dict:
        return {"counts": dict(self.counts), "examples": list(self.examples)}

    @classmethod
    def from_dict(cls, d: dict, strict: bool = False) -> "SkipLog":
        return cls(strict=strict, counts=Counter(d["counts"]), examples=list(d["examples"]))


def decode_utf8(raw: bytes, log: SkipLog, where: str):
    """`raw` as str, or None (logged as invalid_utf8)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        log.skip("invalid_utf8", where, f"byte {e.start}")
        return None
