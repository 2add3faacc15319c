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


# --- images ---------------------------------------------------------------------------------------
def test_fashion_mnist_split_fixed_and_disjoint():
    import os

    from optin.images import FMNIST_DIR, fashion_mnist

    if not os.path.isdir(FMNIST_DIR):
        pytest.skip("dataset-fashion-mnist is not installed (apt-get install -y dataset-fashion-mnist)")
    ds = fashion_mnist()
    tr, ca, te = ds.split("train"), ds.split("calib"), ds.split("test")
    assert (len(tr), len(ca), len(te)) == (59488, 512, 10000)
    assert te[0][0].shape == (28, 28) and {e[2] for e in te} == set(range(10))
    again = fashion_mnist()
    assert all((a[0] == b[0]).all() and a[2] == b[2] for a, b in zip(ca[:20], again.split("calib")[:20]))
    train_ids = {bytes(e[0]) for e in ca[:50]}
    assert not train_ids & {bytes(e[0]) for e in tr[:2000]}  # calib and train are disjoint


def test_fashion_mnist_missing_names_the_apt_command(tmp_path):
    from optin.images import fashion_mnist

    with pytest.raises(BadData, match="apt-get install -y dataset-fashion-mnist"):
        fashion_mnist(str(tmp_path))


def test_imagefolder(tmp_path):
    import numpy as np
    from PIL import Image

    from optin.data import load_data, make_batches
    from optin.images import ImageProcessor

    with pytest.raises(BadData, match="no PNG/JPEG images"):
        load_data(f"imagefolder:{tmp_path}")
    with pytest.raises(BadData, match="does not exist"):
        load_data(f"imagefolder:{tmp_path / 'nope'}")
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        for j in range(3):
            Image.fromarray(rng.integers(0, 255, (20, 16, 3), dtype=np.uint8)).save(tmp_path / c / f"{j}.png")
    ds = load_data(f"imagefolder:{tmp_path}", calib=2)
    assert ds.label_names == ["cat", "dog"] and len(ds.split("calib")) == 2 and len(ds.split("test")) == 4
    proc = ImageProcessor(size=12, channels=1)
    b = make_batches(proc, encode_labels(ds.split("test"), {"cat": 0, "dog": 1}, 2, "x"), 3, 0)
    assert b[0]["pixel_values"].shape == (3, 1, 12, 12) and b[1]["labels"].shape == (1,)
    assert -1 <= float(b[0]["pixel_values"].min()) and float(b[0]["pixel_values"].max()) <= 1
    proc.save_pretrained(str(tmp_path))
    from transformers import ViTConfig

    again = ImageProcessor.for_model(ViTConfig(image_size=12, num_channels=1), str(tmp_path))
    assert again.size == 12 and again.mean.flatten().tolist() == [0.5]
