"""WikiExtractor output files (`AA/wiki_00`, optionally bz2-compressed).

Both of its output modes are read, sniffed per file:
- `--json`: one JSON object per line with id, url, title and text;
- default text mode: `<doc id=".." url=".." title="..">`, the title again
  as the first line, a blank line, the article, then `</doc>`.

In text mode the repeated title line is dropped so that both modes give the
same document text (JSON mode's "text" does not start with the title).
"""
import html
import re

from .bad_input import SkipLog, decode_utf8
from .compression import TruncatedInputError, iter_file_chunks, iter_lines, read_head
from .jsonl import iter_json_lines

_DOC_OPEN = re.compile(rb"^<doc(\s[^>]*)?>\s*$")
_ATTR = re.compile(r'(\w+)="([^"]*)"')


def is_json_mode(path: str) -> bool:
    return read_head(path, 256).lstrip().startswith(b"{")


def iter_wiki_documents(path: str, json_key: str, log: SkipLog):
    if is_json_mode(path):
        yield from iter_json_lines(path, json_key, log)
    else:
        yield from _iter_doc_markup(path, log)


def _finish(lines, attrs, where, log):
    text = decode_utf8(b"\n".join(lines), log, where)
    if text is None:
        return None
    title = html.unescape(attrs.get("title", ""))
    body = text.split("\n")
    if body and title and body[0].strip() == title.strip():
        body = body[1:]
    return where, "\n".join(body).strip("\n")


def _iter_doc_markup(path: str, log: SkipLog):
    lines, attrs, start = None, {}, 0
    try:
        for lineno, raw in iter_lines(iter_file_chunks(path)):
            stripped = raw.strip()
            if lines is None:
                match = _DOC_OPEN.match(stripped)
                if match:
                    head = (match.group(1) or b"").decode("utf-8", "replace")
                    attrs, lines, start = dict(_ATTR.findall(head)), [], lineno
                elif stripped:
                    log.skip("malformed", f"{path}:{lineno}", "text outside <doc>...</doc>")
                continue
            if stripped == b"</doc>":
                doc = _finish(lines, attrs, f"{path}:{start}", log)
                lines = None
                if doc is not None:
                    yield doc
            elif _DOC_OPEN.match(stripped):
                log.skip("malformed", f"{path}:{start}", "<doc> without </doc>")
                head = (_DOC_OPEN.match(stripped).group(1) or b"").decode("utf-8", "replace")
                attrs, lines, start = dict(_ATTR.findall(head)), [], lineno
            else:
                lines.append(raw)
        if lines is not None:
            log.skip("truncated", f"{path}:{start}", "file ends inside <doc>")
    except TruncatedInputError as e:
        log.skip("truncated", f"{path}:{e.line}", str(e))
