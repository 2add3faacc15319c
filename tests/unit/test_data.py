"""Data sources: the fixed Rotten Tomatoes split, CSV/JSONL parsing, label checks."""
import json

import pytest

from optin.data import encode_labels, from_file, load_text_data, rotten_tomatoes
from optin.errors import BadData


def test_rotten_tomatoes_split_fixed_and_disjoint():
    ds = rotten_tomatoes()
    tr, ca, te = ds.split("train"), ds.split("calib"), ds.split("test")
    assert len(te) == 5000 and len(ca) == 512 and len(tr) > 7000
    texts = [set(e[0] for e in s) for s in (tr, ca, te)]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    assert te[:5] == rotten_tomatoes().split("test")[:5]
    assert {e[2] for e in te} == {0, 1}


def test_csv_and_jsonl(tmp_path):
    (tmp_path / "d.csv").write_text("sentence1,sentence2,label\na b,c d,1\ne f,g h,0\ni j,k l,1\n")
    ds = from_file(str(tmp_path / "d.csv"), calib=1)
    assert len(ds.split("calib")) == 1 and len(ds.split("test")) == 2
    assert all(e[1] for e in ds.split("test"))  # pairs kept
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps({"text": f"t{i}", "label": "pos"}) for i in range(4)))
    ds = load_text_data(str(tmp_path / "d.jsonl"), calib=2)
    assert [e[2] for e in ds.split("calib")] == ["pos", "pos"]


@pytest.mark.parametrize("content,match", [
    ("words,label\na,1\n", "no text column"),
    ("text,stars\na,1\n", "no label column"),
    ("text,label\n", "empty"),
])
def test_bad_files(tmp_path, content, match):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(BadData, match=match):
        from_file(str(f))


def test_missing_file():
    with pytest.raises(BadData, match="does not exist"):
        load_text_data("/nonexistent/file.csv")


def test_encode_labels():
    l2i = {"neg": 0, "pos": 1}
    assert [e[2] for e in encode_labels([("a", None, "POS"), ("b", None, "0")], l2i, 2, "x")] == [1, 0]
    with pytest.raises(BadData, match="outside the model's 2 classes"):
        encode_labels([("a", None, 5)], l2i, 2, "x")
    with pytest.raises(BadData, match="not one of the model's labels"):
        encode_labels([("a", None, "meh")], l2i, 2, "x")
