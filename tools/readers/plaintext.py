"""Plain text: documents separated by one or more blank lines; or one file
(or archive member) per document as in OpenWebText."""
from .bad_input import SkipLog, decode_utf8
from .compression import TruncatedInputError, iter_file_chunks, iter_lines


def iter_paragraph_documents(path: str, log: SkipLog):
    """(where, text) for each blank-line-separated block of `path`."""
    block, first_line = [], 0
    try:
        for lineno, raw in iter_lines(iter_file_chunks(path)):
            if raw.strip():
                if not block:
                    first_line = lineno
                block.append(raw.rstrip(b"\r"))
                continue
            if block:
                text = decode_utf8(b"\n".join(block), log, f"{path}:{first_line}")
                block = []
                if text is not None:
                    yield f"{path}:{first_line}", text
        if block:
            text = decode_utf8(b"\n".join(block), log, f"{path}:{first_line}")
            if text is not None:
                yield f"{path}:{first_line}", text
    except TruncatedInputError as e:
        # The block in progress may be cut: drop it with the rest of the file.
        log.skip("truncated", f"{path}:{e.line}", str(e))


def whole_document(raw: bytes, where: str, log: SkipLog):
    """(where, text) for a whole file or archive member, or None if not UTF-8."""
    text = decode_utf8(raw, log, where)
    return None if text is None else (where, text)


def iter_file_documents(paths, log: SkipLog):
    """One document per file (an extracted OpenWebText subset)."""
    for path in paths:
        try:
            raw = b"".join(iter_file_chunks(path))
        except TruncatedInputError as e:
            log.skip("truncated", path, str(e))
            continue
        doc = whole_document(raw, path, log)
        if doc is not None:
            yield doc
