"""CNN channel pruning: tiny random ResNets (basic and bottleneck blocks) and EfficientNet-Lite.

The family-parametrised tests (test_adapters, test_macs, test_export, …) run the `resnet` (basic
blocks) and `efficientnet_lite` tiny models too; here: what only CNNs have — bottleneck blocks
with two runs of inner channels and emptied runs, exact conv MACs against fvcore, the
EfficientNet-PyTorch weight conversion, and a prune end to end on random images."""
import pytest
import torch

from conftest import masked_and_narrowed, randomise_batchnorms, tiny_batches, tiny_model
from optin.adapters import adapter_for
from optin.narrow import narrow
from optin.spec import PruneSpec

VARIANTS = ("resnet", "resnet-bottleneck", "efficientnet_lite")


def _model(variant, seed=0):
    if variant == "resnet-bottleneck":
        return tiny_model("resnet", seed, layer_type="bottleneck")
    return tiny_model(variant, seed)


def _images(seed=0, n=4):
    return tiny_batches(batch=n, seed=seed, model_type="resnet")[0]["pixel_values"]


def _spec(model, keep):
    """keep: per layer, a function of (unit index, layer width) → kept?"""
    a = adapter_for(model)
    d = a.dims()
    neurons = tuple(tuple(n for n in range(d.layer_ffn[i]) if keep[i](n, d.layer_ffn[i])) for i in range(d.num_layers))
    return PruneSpec(model.config.model_type, d.num_heads, d.ffn_size, tuple(() for _ in neurons), neurons,
                     layer_heads=d.layer_heads, layer_ffn=d.layer_ffn)


# every other channel of layer 0; layer 1 emptied in its second half (a bottleneck's second run),
# layer 2 keeps its last quarter (a bottleneck's first run emptied)
MIXED = (lambda n, w: n % 2 == 0, lambda n, w: n < w // 2, lambda n, w: n >= 3 * w // 4)


@pytest.mark.parametrize("variant", VARIANTS)
def test_narrowed_equals_masked_with_emptied_runs(variant):
    model = _model(variant)
    spec = _spec(model, MIXED)
    x = _images()
    dense, masked, narrowed = masked_and_narrowed(model, spec, {"pixel_values": x})
    assert (masked - narrowed).abs().max() <= 1e-5
    assert (dense - narrowed).abs().max() > 1e-3


def test_every_channel_of_every_block_pruned():
    """Every branch becomes a constant; what is left is the stem, the shortcuts and the classifier."""
    for variant in VARIANTS:
        model = _model(variant)
        spec = _spec(model, [lambda n, w: False] * 3)
        dense, masked, narrowed = masked_and_narrowed(model, spec, {"pixel_values": _images()})
        assert (masked - narrowed).abs().max() <= 1e-5, variant


@pytest.mark.parametrize("variant", VARIANTS)
def test_exact_macs_against_fvcore(variant):
    """Conv and Linear MACs: the adapter's count equals fvcore's exactly, dense and pruned; for
    linear families the search's cost model equals it too, for bottlenecks it bounds it from above."""
    from optin.prune import fvcore_count
    from profiling.macs import MATMUL_OPS

    model = _model(variant)
    a = adapter_for(model)
    d = a.dims()
    cm = a.cost_model()
    dense_spec = _spec(model, [lambda n, w: True] * 3)
    assert a.spec_macs(dense_spec) == fvcore_count(model, 0, MATMUL_OPS)
    assert cm.total(d.layer_heads, d.layer_ffn) == pytest.approx(a.spec_macs(dense_spec), rel=1e-9)
    spec = _spec(model, MIXED)
    narrow(a, spec)
    pruned = a.spec_macs(spec)
    assert pruned == fvcore_count(model, 0, MATMUL_OPS) < a.spec_macs(dense_spec)
    linear = cm.total(spec.kept_heads, spec.kept_neurons)
    if variant == "resnet-bottleneck":
        assert pruned <= linear
    else:
        assert pruned == pytest.approx(linear, rel=1e-9)


@pytest.mark.parametrize("variant", VARIANTS)
def test_layer_features_and_grids(variant):
    """Each block's output becomes H·W token rows of C features; valid_tokens follows the grid."""
    model = _model(variant)
    a = adapter_for(model)
    b = {"pixel_values": _images()}
    h, ctx = a.embed(b)
    for i in range(len(a.layers())):
        assert a.valid_tokens(b, i).shape == (4, h.shape[2] * h.shape[3])
        h = a.run_layer(i, h, ctx)
        f = a.features(h)
        assert f.shape == (4, h.shape[2] * h.shape[3], a.dims().layer_hidden[i])
    assert a.valid_tokens(b, len(a.layers())).shape == f.shape[:2]
    assert torch.allclose(a.head(h, ctx), model(**b).logits, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_onnx_parity_of_a_pruned_cnn(variant, tmp_path):
    from export.onnx import export_onnx
    from optin.io import load_pruned, save_pruned

    model = _model(variant)
    spec = _spec(model, MIXED)
    narrow(adapter_for(model), spec)
    save_pruned(model, None, spec, str(tmp_path), extra={"seq_len": 144, "max_length": 144, "data": None})
    again = load_pruned(str(tmp_path))
    x = _images(seed=3)
    assert torch.equal(model(pixel_values=x).logits, again(pixel_values=x).logits)
    rep = export_onnx(str(tmp_path), log=lambda s: None)
    assert rep["parity"]["max_abs_diff"] <= 1e-5 and rep["dynamic_axes"] == ["batch"]


def test_search_respects_the_budget_and_prune_runs_end_to_end(tmp_path):
    from test_vision import _image_folder

    from optin.prune import PruneConfig, prune

    folder = tmp_path / "resnet"
    model = tiny_model("resnet")
    model.save_pretrained(folder)
    from optin.images import ImageProcessor

    ImageProcessor.for_model(model.config).save_pretrained(str(folder))
    data = _image_folder(tmp_path / "images")
    for method in ("optin", "optin-est", "fisher", "magnitude", "random"):
        out = tmp_path / f"out-{method}"
        rep = prune(str(folder), f"imagefolder:{data}", str(out),
                    PruneConfig(flops=0.6, method=method, calib=8, batch_size=4), log=lambda s: None)
        m = rep["macs"]
        assert 0.4 < m["ratio"] <= 0.6 + 1e-9, (method, m)
        # conv + linear MACs exactly as fvcore counts them; its total adds BatchNorm and pooling
        assert m["pruned"] == m["fvcore_matmul_pruned"] and m["dense"] == m["fvcore_matmul_dense"], (method, m)
        assert m["dense"] < m["fvcore_dense"] < 1.1 * m["dense"], (method, m)
        assert rep["kept"]["heads"] == [0, 0, 0]
        assert sum(rep["kept"]["neurons"]) < sum(adapter_for(model).dims().layer_ffn)
        # CNN channels are kept in multiples of 8 unless --align says otherwise (ONNX Runtime's conv blocks)
        assert rep["align"] == 8 and all(n % 8 == 0 for n in rep["kept"]["neurons"]), rep["kept"]


def test_efficientnet_pytorch_conversion():
    """Random EfficientNet-Lite0 of the reference implementation (lukemelas/EfficientNet-PyTorch,
    as packaged by efficientnet-lite-pytorch) → our model: the same logits."""
    ref_pkg = pytest.importorskip("efficientnet_lite_pytorch", reason="pip install --no-deps efficientnet-lite-pytorch")
    from optin.models.efficientnet_lite import (EfficientNetLiteConfig, EfficientNetLiteForImageClassification,
                                                convert_lukemelas_state_dict)

    torch.manual_seed(0)
    ref = randomise_batchnorms(ref_pkg.EfficientNet.from_name("efficientnet-lite0").eval(), 0.1)
    ours = EfficientNetLiteForImageClassification(EfficientNetLiteConfig(num_labels=1000)).eval()
    ours.load_state_dict(convert_lukemelas_state_dict(ref.state_dict()), strict=True)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (ours(pixel_values=x).logits - ref(x)).abs().max() <= 1e-4
    with pytest.raises(KeyError, match="unexpected"):
        convert_lukemelas_state_dict({"_se_reduce.weight": torch.zeros(1)})


@pytest.mark.parametrize("share", [0.3, 0.6, 0.9])
def test_search_budget_holds_for_bottlenecks(share):
    """The search's linear cost bounds a bottleneck's exact MACs (conv2 costs m1·m2·9·H·W) from
    above, so the exact count of the searched mask stays within the budget, whatever the scores."""
    from optin.search import search

    model = _model("resnet-bottleneck")
    a = adapter_for(model)
    d = a.dims()
    dense = a.spec_macs(_spec(model, [lambda n, w: True] * 3))
    budget = a.fixed_macs() + share * (dense - a.fixed_macs())  # the tiny model's stem and shortcuts dominate
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        scores = torch.rand(d.num_layers, d.ffn_size, generator=g).masked_fill(~d.present()[1], float("-inf"))
        res = search(torch.zeros(d.num_layers, 0), scores, a.cost_model(), budget)
        spec = PruneSpec.from_masks("resnet", res.head_mask, res.neuron_mask, dims=d)
        assert a.spec_macs(spec) <= budget + 1e-6
        assert a.spec_macs(spec) <= res.cost + 1e-6


@pytest.mark.parametrize("variant", VARIANTS)
def test_batchnorm_recalibration(variant, tmp_path):
    """After narrowing, every BatchNorm's running statistics are the mean / unbiased variance of
    its input over the calibration batches; nothing else changes; a transformer is left alone."""
    from optin.io import load_pruned, save_pruned
    from optin.recalibrate import recalibrate_batchnorm

    model = _model(variant)
    spec = _spec(model, MIXED)
    narrow(adapter_for(model), spec)
    batches = [{"pixel_values": _images(seed=s, n=6), "labels": torch.zeros(6, dtype=torch.long)} for s in (1, 2)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    seen = {m: [] for m in norms}
    hooks = [m.register_forward_pre_hook(lambda mod, a: seen[mod].append(a[0].detach())) for m in norms]
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    assert recalibrate_batchnorm(model, batches, ["pixel_values"]) == len(norms) > 0
    for h in hooks:
        h.remove()
    assert not model.training and not any(m.training for m in norms)
    for m in norms:
        xs = [x.transpose(0, 1).flatten(1) for x in seen[m]]  # [C, N·H·W] per batch
        assert torch.allclose(m.running_mean, torch.stack([x.mean(1) for x in xs]).mean(0), atol=1e-5)
        assert torch.allclose(m.running_var, torch.stack([x.var(1) for x in xs]).mean(0), atol=1e-4, rtol=1e-4)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())
    # the new statistics are saved and reloaded with the weights
    save_pruned(model, None, spec, str(tmp_path), extra={"seq_len": 144, "max_length": 144, "data": None})
    x = _images(seed=3)
    with torch.no_grad():
        assert torch.equal(load_pruned(str(tmp_path))(pixel_values=x).logits, model(pixel_values=x).logits)
    vit = tiny_model("vit")
    assert recalibrate_batchnorm(vit, batches, ["pixel_values"]) == 0


def test_prune_reports_batchnorm_recalibration(tmp_path):
    from test_vision import _image_folder

    from optin.images import ImageProcessor
    from optin.prune import PruneConfig, prune

    folder = tmp_path / "resnet"
    model = tiny_model("resnet")
    model.save_pretrained(folder)
    ImageProcessor.for_model(model.config).save_pretrained(str(folder))
    data = f"imagefolder:{_image_folder(tmp_path / 'images')}"
    on = prune(str(folder), data, str(tmp_path / "on"), PruneConfig(flops=0.5, method="fisher", calib=8,
                                                                     batch_size=4, fvcore=False), log=lambda s: None)
    off = prune(str(folder), data, str(tmp_path / "off"), PruneConfig(flops=0.5, method="fisher", calib=8,
                                                                      batch_size=4, fvcore=False, bn_recalib=False),
                log=lambda s: None)
    assert on["bn_recalibration"]["layers"] > 0 and on["bn_recalibration"]["examples"] == 8
    assert off["bn_recalibration"] is None and on["kept"] == off["kept"]
    assert on["bn_recalibration"]["accuracy_before"] == off["accuracy"]["pruned"]
