"""The preprocessing merge writes megatron-core's indexed-dataset format with numpy (no
megatron-core import in the merge): the bytes must be the ones megatron-core's own
IndexedDatasetBuilder writes for the same documents, for every dtype and odd shapes."""
import numpy as np
import pytest

from alum.tools import indexed_output
from alum.tools.indexed_output import (DatasetWriter, PartWriter, indexed_dataset_module,
                                       merge_parts)


def _random_documents(rng, n_docs, vocab):
    docs = []
    for _ in range(n_docs):
        n_seq = int(rng.integers(1, 4))
        docs.append([rng.integers(0, vocab, size=int(rng.integers(1, 40))) for _ in range(n_seq)])
    return docs


def test_header_and_dtype_codes_are_megatron_cores():
    module = indexed_dataset_module()
    assert indexed_output.INDEX_HEADER == module._INDEX_HEADER
    for dtype, code in indexed_output.DTYPE_CODES.items():
        assert module.DType.code_from_dtype(dtype) == code
    assert len(indexed_output.DTYPE_CODES) == len(list(module.DType))


@pytest.mark.parametrize("dtype,vocab", [(np.uint8, 200), (np.uint16, 50_000),
                                         (np.int32, 250_000)])
@pytest.mark.parametrize("split", [[7], [1, 5, 1], [3, 0, 4]])
def test_merged_parts_equal_megatron_builder_bytes(tmp_path, dtype, vocab, split):
    rng = np.random.default_rng(len(split) * 1000 + vocab)
    docs = _random_documents(rng, sum(split), vocab)
    with DatasetWriter(str(tmp_path / "reference"), dtype) as writer:  # megatron-core's builder
        for doc in docs:
            writer.add_document([np.asarray(s, dtype) for s in doc])
    prefixes, start = [], 0
    for i, n in enumerate(split):  # parts of n documents each (an empty part too)
        prefix = str(tmp_path / f"part{i}")
        with PartWriter(prefix, dtype) as part:
            for doc in docs[start:start + n]:
                part.add_document([np.asarray(s, dtype) for s in doc])
        prefixes.append(prefix)
        start += n
    merge_parts(prefixes, str(tmp_path / "merged"), dtype)
    for ext in (".bin", ".idx"):
        want = (tmp_path / f"reference{ext}").read_bytes()
        assert (tmp_path / f"merged{ext}").read_bytes() == want, ext
    dataset = indexed_dataset_module().IndexedDataset(str(tmp_path / "merged"))
    flat = [s for doc in docs for s in doc]
    assert len(dataset) == len(flat)
    for got, want in zip(dataset, flat):
        np.testing.assert_array_equal(got, want)


def test_merging_no_parts_gives_megatrons_empty_dataset(tmp_path):
    with DatasetWriter(str(tmp_path / "reference"), np.uint16):
        pass
    merge_parts([], str(tmp_path / "merged"), np.uint16)
    for ext in (".bin", ".idx"):
        assert (tmp_path / f"merged{ext}").read_bytes() == (tmp_path / f"reference{ext}").read_bytes()


def test_merge_does_not_import_megatron_core_or_torch(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from alum.tools.indexed_output import PartWriter, merge_parts\n"
        f"p = {str(tmp_path / 'p')!r}\n"
        "with PartWriter(p, np.uint16) as w:\n"
        "    w.add_document([np.arange(5, dtype=np.uint16)])\n"
        f"merge_parts([p], {str(tmp_path / 'm')!r}, np.uint16)\n"
        "print(sorted(m for m in ('torch', 'megatron') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    assert (tmp_path / "m.idx").exists()
