"""ONNX Runtime engines at every precision on tiny pruned models with real data: INT8 (dynamic and
static QDQ, real onnxruntime.quantization), FP16 graphs, and the task accuracy in engine.json."""
import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import awkward_spec, tiny_model, write_tiny_csv, write_tiny_folder
from optin.adapters import adapter_for
from optin.errors import BadData, BadInput, MissingDependency
from optin.io import save_pruned
from optin.narrow import narrow

QUIET = lambda *_: None  # noqa: E731


def _pruned(root, model_type="bert", data=None, processor=None):
    """A pruned tiny model (non-uniform heads, an empty layer) with its processor and data."""
    model = tiny_model(model_type)
    narrow(adapter_for(model), awkward_spec(model_type))
    dense = write_tiny_folder(root / "dense", model_type)
    if processor is None:
        from transformers import AutoTokenizer

        processor = AutoTokenizer.from_pretrained(dense)
    out = root / "pruned"
    save_pruned(model, processor, awkward_spec(model_type), str(out),
                extra={"seq_len": 16, "max_length": 16, "data": data, "source": str(dense)})
    return out, dense


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant")
    # 400 rows: a calibration split of 128 (the pruner's default) and 272 test examples
    return _pruned(root, data=str(write_tiny_csv(root / "data.csv", n=400)))


def _engine(folder, **kw):
    from export.engines import EngineConfig, build_engine
    from export.quantize import QuantConfig

    q = kw.pop("quant", {})
    return build_engine(str(folder), "onnxruntime", EngineConfig(threads=1, quant=QuantConfig(**q), **kw), log=QUIET)


def _independent_accuracy(folder, graph, dense):
    """Accuracy of `graph` and of the dense PyTorch model on the test split, recomputed here with
    plain ONNX Runtime and the tokenizer, from the split the pruner's defaults give (calib 128,
    seed 0), in batches of 64 as the engine check runs (dynamic INT8 quantises per batch)."""
    from transformers import AutoTokenizer

    from optin.data import load_data
    from optin.io import load_model

    test = load_data(str(folder / "../data.csv"), calib=128, seed=0).split("test")
    tok = AutoTokenizer.from_pretrained(folder)
    sess = ort.InferenceSession(str(graph))
    names = [i.name for i in sess.get_inputs()]
    dense_model, _ = load_model(str(dense))
    hits = dense_hits = 0
    for s in range(0, len(test), 64):
        chunk = test[s:s + 64]
        enc = tok([t for t, _, _ in chunk], padding=True, truncation=True, max_length=16, return_tensors="np")
        feeds = {k: enc[k] if k in enc else np.zeros_like(enc["input_ids"]) for k in names}
        labels = np.array([int(y) for _, _, y in chunk])
        hits += int((sess.run(None, feeds)[0].argmax(-1) == labels).sum())
        with torch.no_grad():
            logits = dense_model(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits
        dense_hits += int((logits.argmax(-1).numpy() == labels).sum())
    return hits / len(test), dense_hits / len(test), len(test)


@pytest.mark.parametrize("mode", ["fp32", "dynamic", "static"])
def test_engine_reports_task_accuracy(text, mode):
    folder, dense = text
    kw = {} if mode == "fp32" else {"int8": True, "quant": {"mode": mode}}
    rep = _engine(folder, **kw)
    on_disk = json.loads((folder / "engine.json").read_text())
    acc = on_disk["accuracy"]
    assert on_disk["precision"] == ("fp32" if mode == "fp32" else "int8") and on_disk["providers"] == ["CPUExecutionProvider"]
    assert acc["available"] and acc["n"] == 272 and rep["accuracy"] == acc
    graph = folder / ("model.onnx" if mode == "fp32" else "engine/model.int8.onnx")
    want, want_dense, n = _independent_accuracy(folder, graph, dense)
    assert n == acc["n"] and acc["engine"] == pytest.approx(want) and acc["dense"] == pytest.approx(want_dense)
    assert acc["drop_vs_dense_points"] == pytest.approx(100 * (want_dense - want))
    assert acc["drop_vs_torch_points"] == pytest.approx(100 * (acc["torch"] - acc["engine"]))
    if mode == "fp32":
        assert acc["agreement_with_torch"] == 1.0 and on_disk["parity"]["tolerance"]["atol"] == 1e-4
        return
    q = on_disk["quantization"]
    # per-channel weight scales by default in both modes (static: per tensor only on a graph with Conv)
    assert q["mode"] == mode and q["per_channel"] is True and q["quantizable_nodes"] > 0
    # INT8: argmax agreement alone, no max-abs bound, judged on the task
    assert on_disk["parity"]["tolerance"] == {"atol": None, "min_agreement": 0.90}
    assert on_disk["parity"]["agreement"] >= 0.90 and "max_abs_limit" not in q
    model = onnx.load(str(graph))
    ops = {n.op_type for n in model.graph.node}
    # real quantisation: integer kernels (dynamic) or QDQ pairs (static) in the graph ORT runs
    assert ({"MatMulInteger", "DynamicQuantizeLinear"} <= ops) if mode == "dynamic" else ({"QuantizeLinear",
                                                                                            "DequantizeLinear"} <= ops)
    if mode == "dynamic":  # per-channel: each MatMulInteger's weight zero point has one entry per output column
        shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
        mmi = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
        assert mmi and all(shapes[n.input[3]] == shapes[n.input[1]][1:] and shapes[n.input[3]][0] > 1 for n in mmi)
    if mode == "static":
        assert q["calibration_method"] == "minmax" and (folder / "engine" / "calibration.json").exists()
        assert "128 calibration examples" in q["calibration"]


def test_static_int8_is_deterministic_for_a_seed(text, tmp_path):
    folder, _ = text

    def build(seed):
        _engine(folder, int8=True, calib_samples=32, eval=False, quant={"mode": "static", "seed": seed})
        files = [folder / "engine" / "model.int8.onnx", folder / "engine" / "calibration.json"]
        return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]

    first = build(3)
    assert build(3) == first
    other = build(4)  # another seed calibrates on other examples: other ranges
    assert other[1] != first[1]


def test_sensitivity_exclusion_leaves_nodes_in_float(text, tmp_path):
    from export.onnx import ensure_onnx
    from export.parity import Tolerance
    from export.quantize import QuantConfig, quantize_int8
    from export.samples import load

    folder, _ = text
    # a max-abs bound no INT8 graph meets (agreement 1.0 alone was met at once on some CPUs), so no
    # step is accepted and the search runs to its cap; called below the engine, whose parity check
    # would then refuse the graph
    out = tmp_path / "model.int8.onnx"
    q = quantize_int8(ensure_onnx(str(folder), "model.onnx", log=QUIET), str(out),
                      QuantConfig(mode="static", per_channel=False, min_agreement=1.0, max_excluded=0.5),
                      load(str(folder), log=QUIET), threads=1, log=QUIET, tol=Tolerance(1e-9, 1.0))
    n = q["quantizable_nodes"]
    assert len(q["sensitivity"]) == n and q["steps"][0]["excluded"] == []
    ranked = list(q["sensitivity"])
    assert all(s["excluded"] == ranked[:len(s["excluded"])] for s in q["steps"])  # most sensitive first
    assert max(len(s["excluded"]) for s in q["steps"]) <= n // 2
    best = max(q["steps"], key=lambda s: s["agreement"])
    assert q["check"]["agreement"] == best["agreement"] and q["excluded_nodes"]
    # what is reported as float is float in the graph: its weight is not fed by a DequantizeLinear
    model = onnx.load(str(out))
    dq_out = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    quantised = {n.name: n.input[1] in dq_out for n in model.graph.node if n.name in q["sensitivity"]}
    assert set(quantised) == set(ranked)
    assert {n for n, yes in quantised.items() if not yes} == set(q["excluded_nodes"])


def test_exclusion_also_meets_the_parity_bound(text):
    """With a max-abs bound given (--tol), agreement alone is not enough: a graph whose logits stray
    past it is not accepted, and the search leaves nodes in float until one is within it, then
    bisects down to the fewest nodes in float that are accepted."""
    folder, _ = text
    q0 = _engine(folder, int8=True, eval=False, quant={"mode": "static"})["quantization"]
    full = q0["steps"][0]
    assert full["excluded"] == [] and full["max_abs_diff"] > 0
    bound = full["max_abs_diff"] / 2  # the fully quantised graph is outside it, float32 is inside
    rep = _engine(folder, int8=True, eval=False, tol=bound,
                  quant={"mode": "static", "min_agreement": 0.5, "max_excluded": 1.0})
    q = rep["quantization"]
    assert q["max_abs_limit"] == pytest.approx(bound)
    assert q["steps"][0]["agreement"] >= 0.5 and q["steps"][0]["max_abs_diff"] > bound  # agreement met, bound not
    assert len(q["steps"]) > 1 and q["excluded_nodes"]
    assert q["check"]["max_abs_diff"] <= bound and q["check"]["agreement"] >= 0.5
    assert rep["parity"]["max_abs_diff"] <= bound  # and the engine's own parity check passed on it
    k = len(q["excluded_nodes"])  # one node fewer in float was tried and refused
    assert any(len(s["excluded"]) == k - 1 and (s["max_abs_diff"] > bound or s["agreement"] < 0.5) for s in q["steps"])
    assert "bound" in q["exclusion_note"]


def test_precision_refusals_are_one_line(text):
    folder, _ = text
    from export.engines import EngineConfig, build_engine

    cases = [(dict(fp16=True), BadInput, "--fp16 needs --provider cuda or tensorrt"),
             (dict(fp16=True, int8=True), BadInput, "not both")]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        cases.append((dict(fp16=True, provider="cuda"), MissingDependency, "no CUDAExecutionProvider"))
    for kw, err, msg in cases:
        with pytest.raises(err) as e:
            build_engine(str(folder), "onnxruntime", EngineConfig(**kw), log=QUIET)
        assert msg in str(e.value) and "\n" not in str(e.value)
    from export.quantize import QuantConfig

    with pytest.raises(BadInput, match="unknown --int8-mode"):
        build_engine(str(folder), "onnxruntime", EngineConfig(int8=True, quant=QuantConfig(mode="qat")), log=QUIET)


def test_static_int8_needs_calibration_data(tmp_path):
    folder, _ = _pruned(tmp_path, data=None)
    with pytest.raises(BadData, match="calibration split"):
        _engine(folder, int8=True, quant={"mode": "static"})
    rep = _engine(folder, int8=True)  # dynamic needs none; accuracy says why it is missing
    assert not rep["accuracy"]["available"] and "no data spec" in rep["accuracy"]["reason"]


def test_fp16_graph_keeps_io_and_matches(text, tmp_path):
    folder, _ = text
    from export.fp16 import FP32_OPS, convert_fp16

    src = folder / "model.onnx"
    if not src.exists():
        from export.onnx import export_onnx

        export_onnx(str(folder), log=QUIET)
    out = tmp_path / "half.onnx"
    info = convert_fp16(str(src), str(out))
    half, full = onnx.load(str(out)), onnx.load(str(src))
    assert [i.type.tensor_type.elem_type for i in half.graph.input] == [i.type.tensor_type.elem_type
                                                                         for i in full.graph.input]
    assert half.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # keep_io_types
    weights = [t for t in half.graph.initializer if len(t.dims) == 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    size = [sum(onnx.numpy_helper.to_array(t).nbytes for t in m.graph.initializer) for m in (half, full)]
    assert size[0] < 0.6 * size[1] and set(info["float32_ops"]) <= set(FP32_OPS)  # weights at half the bytes
    # numerics checked on the CPU here (ORT wraps float16 nodes it lacks in casts); speed needs a GPU
    feeds = {"input_ids": np.array([[2, 7, 9, 11, 3, 0]]), "attention_mask": np.array([[1, 1, 1, 1, 1, 0]])}
    feeds = {i.name: feeds.get(i.name, np.zeros((1, 6), dtype=np.int64)) for i in full.graph.input}
    a = ort.InferenceSession(str(src)).run(None, feeds)[0]
    b = ort.InferenceSession(str(out)).run(None, feeds)[0]
    assert b.dtype == np.float32 and np.isfinite(b).all() and np.abs(a - b).max() < 5e-2


def test_images_static_int8_quantizes_convs(tmp_path):
    """A CNN on real images: static INT8 quantises its Conv layers, and reports accuracy."""
    from test_vision import _image_folder

    from optin.images import ImageProcessor

    images = _image_folder(tmp_path / "images", n=20)
    model = tiny_model("resnet")
    folder, _ = _pruned(tmp_path, "resnet", data=f"imagefolder:{images}",
                        processor=ImageProcessor.for_model(model.config))
    rep = _engine(folder, int8=True, quant={"mode": "static"})
    assert rep["accuracy"]["available"] and rep["accuracy"]["n"] == 60 - 30
    graph = onnx.load(str(folder / "engine" / "model.int8.onnx"))
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    dq_out = {o for n in graph.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert convs and any(c.input[1] in dq_out for c in convs)  # Conv weights come through DequantizeLinear
    # a graph with Conv keeps per-tensor weight scales by default (faster QLinearConv, bench/README.md)
    assert rep["quantization"]["per_channel"] is False
    scales = {i.name: tuple(i.dims) for i in graph.graph.initializer}
    w_dq = [n for n in graph.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in {c.input[1] for c in convs}]
    assert w_dq and all(scales.get(n.input[1], ()) in ((), (1,)) for n in w_dq)  # one scale per weight tensor


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_histogram_calibration_and_per_channel(text, method):
    """Entropy and percentile calibrators stack every batch: calibration batches share one shape."""
    folder, _ = text
    rep = _engine(folder, int8=True, eval=False, quant={"mode": "static", "method": method, "per_channel": True,
                                                         "exclude": "none"})
    q = rep["quantization"]
    assert q["calibration_method"] == method and q["per_channel"] and q["steps"][0]["agreement"] > 0.5
    ranges = json.loads((folder / "engine" / "calibration.json").read_text())
    assert method.lower() in json.dumps(ranges).lower()  # ORT's cache names the method it calibrated with
