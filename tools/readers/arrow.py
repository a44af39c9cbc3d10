"""Columnar inputs: a `datasets` directory made by `save_to_disk`, and parquet.

`datasets.load_from_disk` memory-maps the Arrow files, so a worker can open
the dataset and read only its row range; parquet is read one row group at a
time with pyarrow (which `datasets` itself uses for parquet).
"""
import os

from .bad_input import BadInputError, SkipLog

ROWS_PER_SHARD = 20000
BATCH_ROWS = 1000


def _load(path: str, split):
    import datasets

    ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.DatasetDict):
        return {name: ds[name] for name in ds} if split is None else {split: ds[split]}
    return {None: ds}


def list_hf_shards(path: str, split, json_key: str):
    """[(split, start, stop)] row ranges covering every chosen split."""
    try:
        parts = _load(path, split)
    except KeyError as e:
        raise BadInputError(f"{path}: no split {split!r} in this datasets directory") from e
    out = []
    for name, ds in parts.items():
        if json_key not in ds.column_names:
            raise BadInputError(
                f"{path}: column {json_key!r} not found (columns: {', '.join(ds.column_names)}); "
                "pick one with --json-key")
        for start in range(0, len(ds), ROWS_PER_SHARD):
            out.append((name, start, min(start + ROWS_PER_SHARD, len(ds))))
    return out


def _rows(values, first_row, where_prefix, log):
    for i, text in enumerate(values):
        where = f"{where_prefix} row {first_row + i}"
        if not isinstance(text, str):
            log.skip("missing_key", where, f"value is {type(text).__name__}, not a string")
            continue
        yield where, text


def iter_hf_documents(path: str, split, start: int, stop: int, json_key: str, log: SkipLog):
    ds = _load(path, split)[split].select_columns([json_key])
    prefix = path if split is None else f"{path}[{split}]"
    for lo in range(start, stop, BATCH_ROWS):
        hi = min(lo + BATCH_ROWS, stop)
        yield from _rows(ds[lo:hi][json_key], lo, prefix, log)


def list_parquet_row_groups(path: str, json_key: str):
    """[(row_group, first_row)] of a parquet file; checks the column exists."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    names = pf.schema_arrow.names
    if json_key not in names:
        raise BadInputError(f"{path}: column {json_key!r} not found (columns: {', '.join(names)}); "
                            "pick one with --json-key")
    out, first = [], 0
    for g in range(pf.num_row_groups):
        out.append((g, first))
        first += pf.metadata.row_group(g).num_rows
    return out


def iter_parquet_documents(path: str, row_group: int, first_row: int, json_key: str, log: SkipLog):
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    row = first_row
    for batch in pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[row_group], columns=[json_key]):
        values = batch.column(0).to_pylist()
        yield from _rows(values, row, path, log)
        row += len(values)


def is_hf_disk_dir(path: str) -> bool:
    return os.path.isdir(path) and any(
        os.path.isfile(os.path.join(path, name))
        for name in ("dataset_dict.json", "state.json"))
