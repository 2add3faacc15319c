"""Swin: layer widths and token counts that differ by stage, windowed attention, patch merging.

The generic family tests (test_adapters, test_macs, test_export, test_importance, test_refine)
run a tiny Swin too (conftest). Here: a Swin whose windows are smaller than the token grid in
both stages (32×32 RGB images, 4×4 patches: an 8×8 then a 4×4 grid, 2×2 windows, every other
block shifted), the per-layer facts the adapter supplies, MACs by hand and against fvcore,
narrowing (relative-position bias table included) and reload, `optin prune` with the exact
trajectory method on images, and ONNX export of the result; plus the generic pieces that
per-layer widths touch (spec JSON, the search, latency tables)."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import masked_and_narrowed
from optin.adapters import adapter_for
from optin.adapters.base import Dims
from optin.masking import mask_hooks
from optin.narrow import narrow
from optin.spec import PruneSpec

CONFIG = dict(image_size=32, patch_size=4, num_channels=3, embed_dim=16, depths=(2, 2), num_heads=(2, 4),
              window_size=2, mlp_ratio=2.0, num_labels=3, initializer_range=0.3)


def swin(seed=0, eager=False):
    from transformers import SwinConfig, SwinForImageClassification

    torch.manual_seed(seed)
    cfg = SwinConfig(**CONFIG)
    if eager:
        cfg._attn_implementation = "eager"
    model = SwinForImageClassification._from_config(cfg).eval()
    with torch.no_grad():  # zero-initialised by transformers: random, so that slicing it matters
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0, 0.5)
    return model


def images(n=4, seed=0):
    return {"pixel_values": torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))}


def spec_for(model_type="swin"):
    """Stage 1: block 0 keeps head 1 and odd neurons, block 1 loses every head (and is followed by
    patch merging); stage 2: block 2 keeps 3 heads and loses every neuron, block 3 keeps 1 head."""
    d = adapter_for(swin()).dims()
    hm, nm = torch.zeros(4, 4), torch.zeros(4, 64)
    hm[0, 1] = hm[2, [0, 2, 3]] = hm[3, 3] = 1
    nm[0, 1:32:2] = nm[1, :5] = 1
    nm[3, ::3] = 1
    return PruneSpec.from_masks(model_type, hm, nm, dims=d)


def test_per_layer_facts():
    a = adapter_for(swin())
    d = a.dims()
    assert d.layer_heads == (2, 2, 4, 4) and d.layer_hidden == (16, 16, 32, 32)
    assert d.layer_head_dim == (8,) * 4 and d.layer_ffn == (32, 32, 64, 64) and not d.uniform
    assert (d.num_heads, d.head_dim, d.hidden, d.ffn_size) == (4, 8, 32, 64)  # the widest layer's
    ph, pn = d.present()
    assert ph.sum(1).tolist() == [2, 2, 4, 4] and pn.sum(1).tolist() == [32, 32, 64, 64]
    assert a.seq_len(128) == 64 and a.layer_tokens(128) == [64, 64, 16, 16]
    assert a.attention_keys() == [4] * 4  # 2×2 windows
    b = images()
    assert [tuple(a.valid_tokens(b, i).shape) for i in range(5)] == [(4, 64), (4, 64), (4, 16), (4, 16), (4, 16)]
    assert not a.token_reduction and a.input_names() == ["pixel_values"]


def test_uniform_dims_unchanged():
    d = Dims(3, 4, 8, 32, 48)
    assert d.layer_heads == (4, 4, 4) and d.layer_ffn == (48,) * 3 and d.uniform
    assert d.present()[0].all() and d.present()[1].all()


def test_blockwise_forward_and_narrowed_equals_masked():
    model = swin()
    a = adapter_for(model)
    b = images()
    with torch.no_grad():
        dense = model(**b).logits
        assert (a.forward(b) - dense).abs().max() <= 1e-6
    spec = spec_for()
    table = model.swin.encoder.layers[1].blocks[0].attention.relative_position_bias.relative_position_bias_table
    table = table.detach().clone()
    n_params = sum(p.numel() for p in model.parameters())
    _, masked, narrowed = masked_and_narrowed(model, spec, b)
    assert (masked - narrowed).abs().max() <= 1e-5
    assert (dense - narrowed).abs().max() > 1e-3
    assert sum(p.numel() for p in model.parameters()) < n_params
    att = model.swin.encoder.layers[1].blocks[0].attention
    assert att.num_attention_heads == 3 and att.q_proj.out_features == 24
    # each kept head keeps its own column of the relative-position bias table
    assert torch.equal(att.relative_position_bias.relative_position_bias_table, table[:, [0, 2, 3]])
    assert type(model.swin.encoder.layers[0].blocks[1].attention).__name__ == "_BiasAttention"
    assert type(model.swin.encoder.layers[1].blocks[0].mlp).__name__ == "BiasOnly"


def test_masked_scoring_is_per_example_across_windows():
    """Batched candidate scoring gives each copy of the batch its own mask; Swin's attention sees
    windows, not examples, first."""
    a = adapter_for(swin())
    b = images(2)
    hm = torch.ones(2, 4, 4)
    hm[1, 2, 1] = 0.0  # example 1 loses head 1 of block 2
    with torch.no_grad(), mask_hooks(a) as state:
        state.heads[2] = hm[:, 2]
        both = a.forward(b)
        state.heads[2] = hm[1, 2]
        one = a.forward(b)
        state.clear()
        dense = a.forward(b)
    assert torch.allclose(both[0], dense[0]) and torch.allclose(both[1], one[1], atol=1e-6)
    assert not torch.allclose(both[1], dense[1])


def test_save_load_roundtrip(tmp_path):
    from optin.io import load_pruned, save_pruned

    model = swin()
    spec = spec_for()
    narrow(adapter_for(model), spec)
    save_pruned(model, None, spec, str(tmp_path))
    on_disk = json.loads((tmp_path / "spec.json").read_text())
    assert on_disk["layer_heads"] == [2, 2, 4, 4] and on_disk["layer_ffn"] == [32, 32, 64, 64]
    again = load_pruned(str(tmp_path))
    b = images(3, seed=1)
    with torch.no_grad():
        assert torch.equal(model(**b).logits, again(**b).logits)


def test_spec_json_keeps_the_uniform_format():
    old = ('{"model_type": "bert", "num_heads": 4, "ffn_size": 48, "heads": [[0, 2], [], [1]], '
           '"neurons": [[0], [1, 2], []]}')  # a spec.json written before per-layer widths
    spec = PruneSpec.from_json(old)
    assert spec.dense_widths() == ((4, 4, 4), (48, 48, 48))
    assert "layer_heads" not in json.loads(spec.to_json())
    assert PruneSpec.from_json(spec.to_json()) == spec
    assert PruneSpec.from_json(spec_for().to_json()) == spec_for()


def test_spec_for_other_widths_is_refused():
    from optin.errors import BadInput

    hm, nm = torch.ones(4, 4), torch.ones(4, 64)
    with pytest.raises(BadInput, match=r"\[2, 2, 4, 4\] heads"):
        narrow(adapter_for(swin()), PruneSpec.from_masks("swin", hm, nm))  # no per-layer widths
    bad = PruneSpec.from_masks("swin", hm, nm, dims=Dims.per_layer((2, 2, 4, 4), (8,) * 4, (16, 16, 32, 32),
                                                                    (64,) * 4))
    with pytest.raises(BadInput):
        narrow(adapter_for(swin()), bad)


def test_macs_by_hand_and_against_fvcore():
    from optin.prune import cost_model_for, fvcore_count
    from profiling.macs import MATMUL_OPS

    model = swin()
    a = adapter_for(model)
    cm = cost_model_for(a, 128)
    # per head: q/k/v/o 4·n·d·d_h + windowed Q·Kᵀ and A·V 2·n·(2·2)·d_h; per neuron 2·n·d
    assert cm.per_head == (4 * 64 * 16 * 8 + 2 * 64 * 4 * 8,) * 2 + (4 * 16 * 32 * 8 + 2 * 16 * 4 * 8,) * 2
    assert cm.per_neuron == (2 * 64 * 16,) * 2 + (2 * 16 * 32,) * 2
    assert cm.fixed == 64 * 3 * 4 * 4 * 16 + 16 * (4 * 16) * 32 + 32 * 3  # patch conv, merging, classifier
    d = a.dims()
    dense = cm.total(d.layer_heads, d.layer_ffn)
    assert abs(fvcore_count(model, 64, MATMUL_OPS) - dense) / dense < 0.02
    spec = spec_for()
    narrow(a, spec)
    pruned = cm.total(spec.kept_heads, spec.kept_neurons)
    assert pruned < dense
    assert abs(fvcore_count(model, 64, MATMUL_OPS) - pruned) / pruned < 0.02


def test_search_never_keeps_units_a_layer_lacks():
    from optin.importance import Scores
    from optin.prune import cost_model_for
    from optin.search import search

    a = adapter_for(swin())
    d = a.dims()
    s = Scores(torch.rand(4, 4), torch.rand(4, 64)).only_present(d)
    cm = cost_model_for(a, 128)
    dense = cm.total(d.layer_heads, d.layer_ffn)
    full = search(s.heads, s.neurons, cm, dense)
    assert torch.equal(full.head_mask.bool(), d.present()[0]) and torch.equal(full.neuron_mask.bool(), d.present()[1])
    for align in (1, 8):
        r = search(s.heads, s.neurons, cm, 0.5 * dense, align)
        assert r.cost <= 0.5 * dense * (1 + 1e-6)
        assert not (r.head_mask.bool() & ~d.present()[0]).any() and not (r.neuron_mask.bool() & ~d.present()[1]).any()


def test_latency_model_per_layer_tables():
    from profiling.latency_table import latency_cost_model

    wide = {"batch": 2, "seq": 16, "attention_ms": {1: 3.0, 2: 5.0}, "ffn_ms": {8: 2.0, 16: 3.0}}
    narrow_ = {"batch": 2, "seq": 64, "attention_ms": {1: 2.0, 2: 3.0}, "ffn_ms": {8: 1.0, 16: 1.5}}
    cm = latency_cost_model([narrow_, narrow_, wide, wide])
    assert cm.per_head == pytest.approx((0.5, 0.5, 1.0, 1.0)) and cm.per_neuron[0] == pytest.approx(0.5 / 8 / 2)
    assert cm.fixed == pytest.approx(2 * (1.0 + 0.5) / 2 + 2 * (1.0 + 1.0) / 2)
    same = latency_cost_model(wide, 4)
    assert same == latency_cost_model([wide] * 4)


def _image_folder(root, n=8, labels=3, seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(labels):
        (root / str(c)).mkdir(parents=True)
        for j in range(n):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(root / str(c) / f"{j}.png")
    return root


def test_optin_prune_and_export_end_to_end(tmp_path):
    """`optin prune` with the exact trajectory method on images, then ONNX export with parity."""
    from export.onnx import export_onnx
    from optin.io import load_pruned

    src = tmp_path / "swin"
    swin().save_pretrained(src)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "optin.cli", "prune", str(src), "--data",
                        f"imagefolder:{_image_folder(tmp_path / 'images')}", "--flops", "0.6", "--out", str(out),
                        "--method", "optin", "--calib", "8", "--batch-size", "4", "--group-size", "8"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((out / "report.json").read_text())
    m = rep["macs"]
    assert m["ratio"] <= 0.6 + 1e-9 and m["seq_len"] == 64
    assert abs(m["fvcore_dense"] - m["dense"]) / m["dense"] < 0.25  # fvcore adds LayerNorm, pooling etc.
    assert abs(m["fvcore_pruned"] - m["pruned"]) / m["pruned"] < 0.25
    assert rep["kept"]["dense_heads"] == [2, 2, 4, 4] and rep["kept"]["dense_neurons"] == [32, 32, 64, 64]
    assert all(h <= n for h, n in zip(rep["kept"]["heads"], [2, 2, 4, 4]))
    assert all(k <= n for k, n in zip(rep["kept"]["neurons"], [32, 32, 64, 64]))
    spec = PruneSpec.from_json((out / "spec.json").read_text())
    assert spec.layer_heads == (2, 2, 4, 4)
    model = load_pruned(str(out))
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in swin().parameters())

    exp = export_onnx(str(out), log=lambda s: None)
    assert exp["parity"]["max_abs_diff"] <= 1e-5 and exp["parity"]["agreement"] == 1.0
    assert "calibration samples of imagefolder:" in exp["parity"]["source"]
    import onnxruntime as ort

    b = images(5, seed=3)  # a batch size never seen at export time
    sess = ort.InferenceSession(str(out / "model.onnx"))
    with torch.no_grad():
        want = model(**b).logits.numpy()
    assert np.abs(sess.run(None, {"pixel_values": b["pixel_values"].numpy()})[0] - want).max() <= 1e-5
