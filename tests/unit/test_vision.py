"""Image classifiers end to end on a tiny ViT: `optin run` with an image folder (prune → ONNX
export with parity on real images → ONNX Runtime → profile against dense), and the vision hooks
of the generic code (valid tokens, token count for MACs, ONNX inputs)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import tiny_batches, tiny_model, write_tiny_folder
from optin.adapters import adapter_for


def _image_folder(root, n=12, labels=3, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(labels):
        (root / str(c)).mkdir(parents=True)
        for j in range(n):  # 16×16 RGB: the processor converts to 1 channel and resizes to 12×12
            Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / str(c) / f"{j}.png")
    return root


@pytest.mark.parametrize("model_type,tokens", [("vit", 10), ("deit", 11)])
def test_vision_hooks(model_type, tokens):
    a = adapter_for(tiny_model(model_type))
    b = tiny_batches(model_type=model_type)[0]
    assert a.seq_len(128) == tokens  # 9 patches + [CLS] (+ distillation token), whatever max_length says
    assert a.valid_tokens(b).shape == (4, tokens) and a.valid_tokens(b).all()
    assert a.input_names() == ["pixel_values"] and a.dynamic_axes() == {"pixel_values": {0: "batch"}}
    assert a.head_macs() == 9 * 16 * 32 + 32 * 3  # patch conv + classifier


def test_optin_run_on_tiny_vit(tmp_path):
    model = write_tiny_folder(tmp_path / "vit", "vit")
    data = _image_folder(tmp_path / "images")
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "optin.cli", "run", str(model), "--data", f"imagefolder:{data}",
                        "--flops", "0.6", "--out", str(out), "--calib", "8", "--group-size", "8", "--batch", "2",
                        "--iters", "20"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "run.json").read_text())
    assert rep["macs"]["seq_len"] == 10 and rep["macs"]["ratio"] <= 0.6 + 1e-9
    assert abs(rep["macs"]["fvcore_dense"] - rep["macs"]["dense"]) / rep["macs"]["dense"] < 0.25  # + LayerNorm etc.
    exp = json.loads((out / "export.json").read_text())
    assert exp["inputs"] == ["pixel_values"] and exp["dynamic_axes"] == ["batch"]
    assert "calibration samples of imagefolder:" in exp["parity"]["source"]
    assert exp["parity"]["max_abs_diff"] <= 1e-4
    prof = json.loads((out / "profile.json").read_text())
    assert prof["inputs"].startswith("real images") and prof["speedup"]["measured"] > 0
    assert prof["seq"] == 10 and prof["macs"]["seq_len"] == 10  # the model's tokens, not --seq's 64
    assert (out / "preprocessor_config.json").exists()
    rep = json.loads((out / "report.json").read_text())
    assert rep["accuracy"]["test_examples"] == 36 - 8


def test_modality_mismatch_is_one_line(tiny_folders, tiny_csv, tmp_path):
    for model, data, msg in ((tiny_folders["vit"], str(tiny_csv), "holds text examples but"),
                             (tiny_folders["bert"], f"imagefolder:{_image_folder(tmp_path / 'img', n=2)}",
                              "holds image examples but")):
        r = subprocess.run([sys.executable, "-m", "optin.cli", "prune", str(model), "--data", data,
                            "--out", str(tmp_path / "x"), "--no-fvcore"], capture_output=True, text=True, timeout=300)
        lines = [ln for ln in r.stderr.splitlines() if ln.startswith("optin")]
        assert r.returncode == 2 and len(lines) == 1 and msg in lines[0], r.stderr
        assert not (tmp_path / "x").exists()


def test_dynamo_export_of_a_pruned_vit(tmp_path):
    from export.onnx import export_onnx
    from optin.io import save_pruned
    from optin.narrow import narrow
    from optin.spec import PruneSpec

    model = tiny_model("deit")
    spec = PruneSpec("deit", 4, 48, ((0, 2), (), (1, 2, 3)), (tuple(range(0, 48, 2)), tuple(range(10)), ()))
    narrow(adapter_for(model), spec)
    save_pruned(model, None, spec, str(tmp_path), extra={"seq_len": 11, "max_length": 11, "data": None})
    rep = export_onnx(str(tmp_path), dynamo=True, log=lambda s: None)
    assert rep["parity"]["max_abs_diff"] <= 1e-5 and rep["dynamic_axes"] == ["batch"]


def test_hf_image_dataset(tiny_folders, tmp_path):
    """`hf:` image data (a local dataset folder here; hub names work the same for users with a hub):
    the Image column is found, calibration comes from train and evaluation from test."""
    import datasets

    rng = np.random.default_rng(0)
    feats = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b", "c"])})
    for split, n in (("train", 12), ("test", 9)):
        datasets.Dataset.from_dict({"img": [rng.integers(0, 255, (16, 16, 3), dtype=np.uint8) for _ in range(n)],
                                    "label": [i % 3 for i in range(n)]}, features=feats).to_parquet(
            str(tmp_path / f"{split}.parquet"))
    from optin.data import load_data

    ds = load_data(f"hf:{tmp_path}")
    assert ds.meta["modality"] == "image" and len(ds.split("calib")) == 12 and len(ds.split("test")) == 9
    assert ds.split("test")[0][0].shape == (16, 16, 3) and ds.split("test")[4][2] == 1
    out = tmp_path / "p"
    r = subprocess.run([sys.executable, "-m", "optin.cli", "prune", str(tiny_folders["vit"]), "--data", f"hf:{tmp_path}",
                        "--flops", "0.6", "--calib", "8", "--method", "fisher", "--no-fvcore", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["accuracy"]["test_examples"] == 9 and rep["calibration_examples"] == 8
