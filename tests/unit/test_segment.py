"""Semantic segmentation (optin.segdata, optin.tasks, optin.models.swin_seg, optin.adapters.segment).

The generic family tests (test_adapters, test_macs, test_export, test_importance, test_refine,
test_reconstruct) run the tiny two-stage swin_seg of conftest too. Here: the fmnist-seg generator
on the real Fashion-MNIST images, mIoU / pixel accuracy on a hand-made example, the per-pixel KD
rows, a three-stage segmenter (windows smaller than the grid, the decoder reading three grids)
narrowed against masked, MACs against fvcore and ONNX parity on its [B, classes, H, W] output,
bad segmentation data refused in one line with exit 2, and `optin run` end to end on a
segfolder."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import masked_and_narrowed, write_tiny_folder
from optin.adapters import adapter_for
from optin.narrow import narrow
from optin.spec import PruneSpec

# 16×16 images in 2×2 patches: an 8×8, 4×4 then 2×2 grid; 2×2 windows (shifted every other block)
SEG3 = dict(image_size=16, patch_size=2, num_channels=1, embed_dim=8, depths=(2, 1, 1), num_heads=(2, 2, 4),
            window_size=2, mlp_ratio=2.0, decoder_hidden_size=8, num_labels=4, initializer_range=0.3)


def seg3(seed=0):
    from optin.models.swin_seg import SwinSegConfig, SwinSegForSemanticSegmentation

    torch.manual_seed(seed)
    model = SwinSegForSemanticSegmentation(SwinSegConfig(**SEG3)).eval()
    with torch.no_grad():  # zero-initialised by transformers: random, so that slicing it matters
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0, 0.5)
    return model


def seg3_spec():
    """Block 0 keeps head 1 and odd neurons, block 1 loses every head, block 2 every neuron,
    block 3 keeps heads 0 and 3."""
    d = adapter_for(seg3()).dims()
    hm, nm = torch.zeros(4, 4), torch.zeros(4, 64)
    hm[0, 1] = hm[2, [0, 1]] = hm[3, [0, 3]] = 1
    nm[0, 1:16:2] = nm[1, :5] = 1
    nm[3, ::3] = 1
    return PruneSpec.from_masks("swin_seg", hm, nm, dims=d)


def images(n=3, seed=0):
    return {"pixel_values": torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))}


# --- data ----------------------------------------------------------------------------------------
def test_fmnist_seg_is_deterministic_and_consistent():
    from optin.segdata import FMNIST_SEG_LABELS, fmnist_seg

    sizes = {"calib": 6, "test": 6}
    a, b = fmnist_seg(sizes=sizes), fmnist_seg(sizes=sizes)
    for split in ("calib", "test"):
        for (xa, _, ya), (xb, _, yb) in zip(a.split(split), b.split(split)):
            assert np.array_equal(xa, xb) and np.array_equal(ya, yb)
    x = np.stack([e[0] for e in a.split("test")])
    y = np.stack([e[2] for e in a.split("test")])
    assert x.shape == y.shape == (6, 64, 64) and x.dtype == y.dtype == np.uint8
    assert y.max() < len(FMNIST_SEG_LABELS) == 11
    for xi, yi in zip(x, y):
        assert (yi == 0).any() and (yi > 0).any()    # background and at least one garment
        assert np.array_equal(xi > 0, yi > 0)        # a garment pixel is labelled, background is black
    # splits draw from their own generators and Fashion-MNIST splits: not the same canvases
    assert not np.array_equal(a.split("calib")[0][2], a.split("test")[0][2])


def test_compose_depends_on_the_seed():
    from optin.segdata import compose

    imgs = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    cls = np.arange(5)
    one = compose(imgs, cls, 3, np.random.default_rng(1))
    again = compose(imgs, cls, 3, np.random.default_rng(1))
    other = compose(imgs, cls, 3, np.random.default_rng(2))
    assert all(np.array_equal(p, q) for p, q in zip(one, again))
    assert not np.array_equal(one[1], other[1])


# --- metrics -------------------------------------------------------------------------------------
def test_miou_and_pixel_accuracy_by_hand():
    from optin.tasks import SEGMENTATION

    # 1 image, 2×3 pixels, 3 classes; -100 is ignored (it would be a miss otherwise)
    labels = torch.tensor([[[0, 0, 1], [1, 2, -100]]])
    pred = torch.tensor([[[0, 1, 1], [1, 1, 0]]])
    r = SEGMENTATION.score(pred, labels, 3)
    # class 0: TP 1, FN 1 (pixel (0,1)) → 1/2; class 1: TP 2, FP 2 (pixels (0,1), (1,1)) → 2/4;
    # class 2: FN 1 → 0; the ignored pixel's prediction (0) is no false positive of class 0
    assert r["iou"] == pytest.approx([0.5, 0.5, 0.0])
    assert r["accuracy"] == pytest.approx((0.5 + 0.5 + 0.0) / 3) and r["metric"] == "mIoU"
    assert r["pixel_accuracy"] == pytest.approx(3 / 5) and r["pixels"] == 5
    # a class absent from labels and predictions is left out of the mean, not counted as 0
    r4 = SEGMENTATION.score(pred, labels, 4)
    assert r4["iou"][3] is None and r4["accuracy"] == pytest.approx(r["accuracy"])
    # the interval comes from resampling images: two identical images give none, two different ones some
    same = SEGMENTATION.score(pred.repeat(2, 1, 1), labels.repeat(2, 1, 1), 3)
    assert same["accuracy"] == pytest.approx(r["accuracy"]) and same["ci95"] == pytest.approx(0, abs=1e-12)
    mixed = SEGMENTATION.score(torch.cat([pred, labels.clamp(min=0)]), labels.repeat(2, 1, 1), 3)
    assert mixed["ci95"] > 0.01


def test_paired_miou_difference():
    from optin.tasks import confusion, metrics, paired_difference

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (40, 4, 4), generator=g)
    noisy = torch.where(torch.rand(labels.shape, generator=g) < 0.4, torch.randint(0, 3, labels.shape, generator=g), labels)
    worse = torch.where(torch.rand(labels.shape, generator=g) < 0.3, (noisy + 1) % 3, noisy)  # more errors, same images
    a, b = confusion(noisy, labels, 3), confusion(worse, labels, 3)
    r = paired_difference(a, b)
    assert r["diff"] == pytest.approx(metrics(a, resamples=0)["accuracy"] - metrics(b, resamples=0)["accuracy"])
    assert r["diff"] > 0 and r["ci95"][0] > 0 and r["p"] < 0.01
    back = paired_difference(b, a)  # the same comparison the other way round
    assert back["diff"] == pytest.approx(-r["diff"]) and back["p"] == pytest.approx(r["p"])
    self_ = paired_difference(a, a)
    assert self_["diff"] == 0 and self_["p"] == 1.0 and self_["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError):
        paired_difference(a, b[:10])


def test_kd_rows_are_one_per_pixel():
    from optin.tasks import CLASSIFICATION, SEGMENTATION

    logits = torch.randn(2, 3, 4, 5)
    rows = SEGMENTATION.rows(logits)
    assert rows.shape == (2 * 4 * 5, 3)
    assert torch.equal(rows[1 * 20 + 2 * 5 + 3], logits[1, :, 2, 3])  # batch-major, then row, then column
    flat = torch.randn(4, 3)
    assert CLASSIFICATION.rows(flat) is flat


# --- model: three stages -------------------------------------------------------------------------
def test_three_stage_blockwise_and_narrowed_equals_masked():
    model = seg3()
    a = adapter_for(model)
    b = images()
    with torch.no_grad():
        dense = model(**b).logits
        assert dense.shape == (3, 4, 16, 16)
        assert (a.forward(b) - dense).abs().max() <= 1e-6  # the adapter's block-wise forward is the model
    n_params = sum(p.numel() for p in model.parameters())
    _, masked, narrowed = masked_and_narrowed(model, seg3_spec(), b)
    assert (masked - narrowed).abs().max() <= 1e-5
    assert (dense - narrowed).abs().max() > 1e-3
    assert sum(p.numel() for p in model.parameters()) < n_params
    att = model.swin.encoder.layers[2].blocks[0].attention  # block 3: heads 0 and 3 of 4
    assert att.num_attention_heads == 2 and att.q_proj.out_features == 16


def test_three_stage_macs_match_fvcore():
    from optin.prune import cost_model_for, fvcore_count
    from profiling.macs import MATMUL_OPS

    model = seg3()
    a = adapter_for(model)
    cm = cost_model_for(a, a.seq_len(128))
    d = a.dims()
    dense = cm.total(d.layer_heads, d.layer_ffn)
    assert abs(fvcore_count(model, 64, MATMUL_OPS) - dense) / dense < 0.02
    spec = seg3_spec()
    narrow(a, spec)
    pruned = cm.total(spec.kept_heads, spec.kept_neurons)
    assert pruned < dense
    assert abs(fvcore_count(model, 64, MATMUL_OPS) - pruned) / pruned < 0.02
    # the decoder is counted: it is a large part of a model this small
    assert a.head_macs() > 8 * 8 * (3 * 8 * 8 + 8 * 4)


def test_three_stage_onnx_parity_on_the_segmentation_output(tmp_path):
    import onnxruntime as ort

    from export.onnx import export_onnx
    from optin.io import load_pruned, save_pruned

    model = seg3()
    spec = seg3_spec()
    narrow(adapter_for(model), spec)
    save_pruned(model, None, spec, str(tmp_path), extra={"seq_len": 64, "max_length": 16})
    rep = export_onnx(str(tmp_path), log=lambda s: None)
    assert rep["parity"]["max_abs_diff"] <= 1e-5 and rep["parity"]["agreement"] == 1.0
    sess = ort.InferenceSession(str(tmp_path / "model.onnx"))
    x = images(5, seed=3)["pixel_values"]  # a batch size the export never saw
    got = sess.run(None, {"pixel_values": x.numpy()})[0]
    with torch.no_grad():
        want = load_pruned(str(tmp_path))(pixel_values=x).logits.numpy()
    assert got.shape == (5, 4, 16, 16) and np.abs(got - want).max() <= 1e-5


def test_parity_agreement_counts_pixels():
    from export.parity import measure_parity

    w = np.zeros((2, 3, 4, 4), np.float32)
    w[:, 1] = 1.0  # class 1 everywhere
    g = w.copy()
    g[0, 2, 0, 0] = 5.0  # one pixel of 32 now predicts class 2
    r = measure_parity([{"logits": w}], lambda b: {"logits": g}, [None])
    assert r["agreement"] == pytest.approx(31 / 32) and r["samples"] == 2


# --- the command line ----------------------------------------------------------------------------
def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "optin.cli", *args], capture_output=True, text=True, timeout=600)


def write_segfolder(root, n=24, size=16, classes=3, seed=0):
    """Gray images whose bright rectangles are the labelled classes (so a model can learn them)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for j in range(n):
        lab = np.zeros((size, size), np.uint8)
        lab[rng.integers(0, size // 2):, :rng.integers(4, size)] = rng.integers(1, classes)
        img = (lab * 100 + rng.integers(0, 40, (size, size))).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{j}.png")
        Image.fromarray(lab).save(root / "labels" / f"{j}.png")
    return root


@pytest.fixture(scope="module")
def seg_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("seg")
    return write_tiny_folder(root / "model", "swin_seg"), write_segfolder(root / "data")


def test_bad_segmentation_data_one_line_exit_2(seg_folder, tmp_path, capsys):
    import shutil

    from optin.cli import main

    from PIL import Image

    model, good = seg_folder
    cases = {}
    d = tmp_path / "nolabel"
    shutil.copytree(good, d)
    os.remove(d / "labels" / "3.png")
    cases["missing label"] = (str(model), f"segfolder:{d}", "images/3.png has no labels/3.png")
    d = tmp_path / "size"
    shutil.copytree(good, d)
    Image.fromarray(np.zeros((10, 16), np.uint8)).save(d / "labels" / "5.png")
    cases["size"] = (str(model), f"segfolder:{d}", "label map is 10×16 but its image is 16×16")
    d = tmp_path / "range"
    shutil.copytree(good, d)
    Image.fromarray(np.full((16, 16), 7, np.uint8)).save(d / "labels" / "0.png")
    cases["range"] = (str(model), f"segfolder:{d}", "has class id 7 but the model has 3 classes")
    d = tmp_path / "layout"
    (d / "images").mkdir(parents=True)
    cases["layout"] = (str(model), f"segfolder:{d}", "needs images/ and labels/ sub-folders")
    cases["classification data"] = (str(model), "fashion-mnist", "is classification data but the model is a swin_seg "
                                    "segmentation model")
    vit = write_tiny_folder(tmp_path / "vit", "vit")
    cases["segmentation data"] = (str(vit), f"segfolder:{good}", "is segmentation data but the model is a vit "
                                  "classification model")
    for name, (m, data, msg) in cases.items():
        out = tmp_path / f"out-{name.replace(' ', '_')}"
        # in-process (the CLI's own entry point): a subprocess per case would spend its time importing torch
        code = main(["prune", m, "--data", data, "--out", str(out), "--no-fvcore", "--calib", "8"])
        err = capsys.readouterr().err
        assert code == 2, (name, err[-2000:])
        lines = [ln for ln in err.splitlines() if ln.startswith("optin")]
        assert len(lines) == 1 and msg in lines[0], (name, err[-2000:])
        assert not out.exists(), name


def test_optin_run_on_a_segfolder(seg_folder, tmp_path):
    model, data = seg_folder
    out = tmp_path / "run"
    r = run_cli("run", str(model), "--data", f"segfolder:{data}", "--flops", "0.6", "--out", str(out),
                "--calib", "8", "--batch", "2", "--iters", "20", "--backend", "onnxruntime", "--max-accuracy-drop", "100")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mIoU" in r.stdout.splitlines()[-1] or "mIoU" in r.stderr
    rep = json.loads((out / "run.json").read_text())
    a = rep["accuracy"]
    assert a["metric"] == "mIoU" and a["test_examples"] == 24 - 8 and 0 <= a["pruned"] <= 1
    assert 0 <= a["details"]["pruned"]["pixel_accuracy"] <= 1 and len(a["details"]["dense"]["iou"]) == 3
    assert rep["macs"]["ratio"] <= 0.6 + 1e-9
    assert rep["parity"]["max_abs_diff"] <= 1e-4 and rep["parity"]["agreement"] >= 0.999
    e = rep["engine_accuracy"]  # the engine scored with the same metric on the same test images
    assert e["available"] and e["metric"] == "mIoU" and e["engine"] == pytest.approx(a["pruned"], abs=1e-6)
    assert e["dense"] == pytest.approx(a["dense"])
    assert rep["speedup"]["measured"] > 0
    # the gate reads the engine's drop in the task's metric (mIoU points here)
    assert rep["gate"]["passed"] and rep["gate"]["max_accuracy_drop"] == 100


def test_hf_segmentation_dataset(seg_folder, tmp_path, capsys):
    """`hf:` data with a second Image column (the label map): read as segmentation, pruned with mIoU."""
    import datasets

    from optin.cli import main
    from optin.data import load_data

    model, _ = seg_folder
    rng = np.random.default_rng(0)
    feats = datasets.Features({"image": datasets.Image(), "annotation": datasets.Image()})
    for split, n in (("train", 10), ("test", 6)):
        labs = [rng.integers(0, 3, (16, 16), dtype=np.uint8) for _ in range(n)]
        datasets.Dataset.from_dict({"image": [(lab * 80).astype(np.uint8) for lab in labs], "annotation": labs},
                                   features=feats).to_parquet(str(tmp_path / f"{split}.parquet"))
    ds = load_data(f"hf:{tmp_path}")
    assert ds.meta["task"] == "segmentation" and len(ds.split("test")) == 6
    x, _, y = ds.split("test")[0]
    assert x.shape == y.shape == (16, 16) and y.max() <= 2
    out = tmp_path / "p"
    assert main(["prune", str(model), "--data", f"hf:{tmp_path}", "--flops", "0.6", "--calib", "8",
                 "--method", "fisher", "--no-fvcore", "--out", str(out)]) == 0, capsys.readouterr().err[-2000:]
    rep = json.loads((out / "report.json").read_text())
    assert rep["accuracy"]["metric"] == "mIoU" and rep["accuracy"]["test_examples"] == 6
