"""The `swin-fmnist-seg` zoo model, built from the weights the repository ships (seconds; training
them is `python -m optin.zoo_seg --ship`, not run here): the shipped file is checked against its
recorded digest, the model segments real fmnist-seg canvases, and `optin prune` at 60% of the
MACs keeps its mIoU (docs/segmentation.md has the full-size numbers)."""
import json
import shutil

import pytest
import torch

from optin.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zoo_folder(tmp_path_factory):
    import os

    from optin import zoo_seg

    if not zoo_seg._shipped():
        pytest.skip("optin/zoo_weights/swin-fmnist-seg.* are not in this checkout")
    out = tmp_path_factory.mktemp("zoo")
    zoo_seg.build(str(out), log=lambda s: None)
    assert os.path.isfile(out / "optin_zoo.json")
    return out


def test_damaged_shipped_weights_are_refused(tmp_path, monkeypatch):
    from optin import zoo_seg
    from optin.errors import DamagedFile

    if not zoo_seg._shipped():
        pytest.skip("no shipped weights")
    shutil.copytree(zoo_seg.WEIGHTS_DIR, tmp_path / "w")
    f = tmp_path / "w" / f"{zoo_seg.NAME}.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 1
    f.write_bytes(bytes(data))
    monkeypatch.setattr(zoo_seg, "WEIGHTS_DIR", str(tmp_path / "w"))
    with pytest.raises(DamagedFile, match="does not match"):
        zoo_seg.build(str(tmp_path / "out"), log=lambda s: None)


def test_shipped_model_segments_fmnist_seg(zoo_folder):
    from optin.adapters import adapter_for
    from optin.data import make_batches
    from optin.io import load_model
    from optin.segdata import fmnist_seg

    model, proc = load_model(str(zoo_folder))
    test = fmnist_seg(splits=("test",), sizes={"test": 300}).split("test")
    batches = make_batches(proc, test, 50, 64, with_labels=True)
    r = adapter_for(model).task.evaluate(model, batches)
    # measured on the 2,000 test canvases: see docs/segmentation.md; chance is far below these
    assert r["pixel_accuracy"] > 0.8 and r["accuracy"] > 0.3, r
    with torch.no_grad():
        assert model(**{k: v for k, v in batches[0].items() if k != "labels"}).logits.shape == (50, 11, 64, 64)


def test_prune_at_0_6_keeps_miou(zoo_folder, tmp_path, capsys):
    out = tmp_path / "p"
    code = main(["prune", str(zoo_folder), "--data", "fmnist-seg", "--flops", "0.6", "--eval-limit", "300",
                 "--no-fvcore", "--out", str(out)])
    assert code == 0, capsys.readouterr().err[-3000:]
    rep = json.loads((out / "report.json").read_text())
    a = rep["accuracy"]
    assert a["metric"] == "mIoU" and a["test_examples"] == 300 and rep["macs"]["ratio"] <= 0.6 + 1e-9
    assert a["dense"] - a["pruned"] <= 0.03, a  # 2 points on the full test split; 300 canvases are noisier
