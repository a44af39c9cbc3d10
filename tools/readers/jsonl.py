"""JSON lines (plain, .gz, .bz2, .xz, .zst): one document per line under a key."""
import json

from .bad_input import SkipLog, decode_utf8
from .compression import TruncatedInputError, iter_file_chunks, iter_lines


def iter_json_lines(path: str, json_key: str, log: SkipLog):
    """(where, text) for each line of `path` whose `json_key` holds a string."""
    try:
        for lineno, raw in iter_lines(iter_file_chunks(path)):
            if not raw.strip():
                continue  # blank separator lines are not documents
            where = f"{path}:{lineno}"
            line = decode_utf8(raw, log, where)
            if line is None:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                log.skip("malformed", where, f"invalid JSON ({e.msg} at column {e.colno})")
                continue
            if not isinstance(record, dict) or json_key not in record:
                log.skip("missing_key", where, f"no key {json_key!r}")
                continue
            text = record[json_key]
            if not isinstance(text, str):
                log.skip("missing_key", where, f"{json_key!r} holds {type(text).__name__}, not a string")
                continue
            yield where, text
    except TruncatedInputError as e:
        log.skip("truncated", f"{path}:{e.line}", str(e))
