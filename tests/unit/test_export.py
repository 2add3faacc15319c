"""ONNX export and engines on tiny awkward models: parity, contract, failures that must be loud."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from conftest import VISION, awkward_spec, tiny_batches, tiny_model, write_tiny_csv, write_tiny_folder
from optin.adapters import adapter_for
from optin.errors import BadInput, MissingDependency, ParityError
from optin.io import save_pruned
from optin.narrow import narrow

EXPORT_KEYS = {"opset", "exporter", "parity", "onnx_file", "versions"}


def write_pruned(path, model_type, tokenizer=None, data=None):
    model = tiny_model(model_type)
    spec = awkward_spec(model_type)
    narrow(adapter_for(model), spec)
    save_pruned(model, tokenizer, spec, str(path), extra={"seq_len": 16, "max_length": 16, "data": data})
    return path


@pytest.fixture(scope="module")
def bert_with_data(tmp_path_factory):
    """A pruned tiny BERT with a tokenizer and a CSV: parity runs on real calibration text."""
    from transformers import AutoTokenizer

    root = tmp_path_factory.mktemp("bert_data")
    dense = write_tiny_folder(root / "dense", "bert")
    csv = write_tiny_csv(root / "data.csv")
    return write_pruned(root / "pruned", "bert", AutoTokenizer.from_pretrained(dense), str(csv))


def test_export_awkward_shapes(family, tmp_path):
    from export.onnx import export_onnx

    d = write_pruned(tmp_path / family, family)
    rep = export_onnx(str(d), log=lambda s: None)
    on_disk = json.loads((d / "export.json").read_text())
    assert EXPORT_KEYS <= set(on_disk) and on_disk["opset"] == 17 and on_disk["exporter"] == "torchscript"
    p = on_disk["parity"]
    assert p["max_abs_diff"] <= 1e-5 and p["agreement"] == 1.0 and p["samples"] == 64
    assert "random-token" in p["source"]  # no tokenizer in this folder: said, not hidden
    assert rep["parity"]["max_abs_diff"] == p["max_abs_diff"]
    graph = onnx.load(str(d / "model.onnx")).graph
    names = [i.name for i in graph.input]
    if family in VISION:
        assert names == ["pixel_values"]
        assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim][0] == "batch"
    else:
        token_types = getattr(tiny_model(family).config, "type_vocab_size", 0) > 1  # real RoBERTa has 1, DistilBERT none
        assert names == ["input_ids", "attention_mask"] + ["token_type_ids"] * token_types
        assert [d.dim_param for d in graph.input[0].type.tensor_type.shape.dim] == ["batch", "sequence"]
    # dynamic axes really are dynamic: a shape never seen at export time
    b = tiny_batches(1, batch=5, seq=23, model_type=family)[0]
    sess = ort.InferenceSession(str(d / "model.onnx"))
    feeds = {k: b[k].numpy() for k in names if k in b}
    if "token_type_ids" in names:
        feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    from optin.io import load_pruned

    with torch.no_grad():
        want = load_pruned(str(d))(**{k: torch.from_numpy(v) for k, v in feeds.items()}).logits.numpy()
    assert np.abs(sess.run(None, feeds)[0] - want).max() <= 1e-5
    assert not list(d.glob(".*tmp"))


def test_export_real_data_and_optimizer(bert_with_data):
    from export.onnx import export_onnx

    rep = export_onnx(str(bert_with_data), optimize=True, log=lambda s: None)
    assert "calibration samples of" in rep["parity"]["source"]
    opt = rep["optimized"]
    assert (bert_with_data / "model.opt.onnx").exists()
    assert opt["fused_operators"] and opt["parity"]["max_abs_diff"] <= 1e-5
    # a plain re-export drops the optimised file, which would no longer match model.onnx
    export_onnx(str(bert_with_data), log=lambda s: None)
    assert not (bert_with_data / "model.opt.onnx").exists()


def test_attention_exports_eager_and_the_model_keeps_its_own(tmp_path):
    """SDPA traces into a mask Where and an IsNaN + Where per layer; the export writes eager
    attention instead (fewer nodes, faster in ORT) and leaves the model's setting as it was."""
    from export.onnx import _torch_export

    model = tiny_model("bert")
    model.set_attn_implementation("sdpa")
    names = adapter_for(model).input_names()
    path = str(tmp_path / "m.onnx")
    _torch_export(model, names, path, 17, False)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert "Softmax" in ops and "IsNaN" not in ops
    assert model.config._attn_implementation == "sdpa"


def test_dynamo_exporter(tmp_path):
    from export.onnx import export_onnx

    d = write_pruned(tmp_path / "bert", "bert")
    rep = export_onnx(str(d), dynamo=True, log=lambda s: None)
    assert rep["exporter"] == "dynamo" and rep["opset"] == 18
    assert rep["parity"]["max_abs_diff"] <= 1e-5
    with pytest.raises(BadInput, match="opset 18 or newer"):
        export_onnx(str(d), dynamo=True, opset=17, log=lambda s: None)


def test_parity_without_a_max_abs_bound_still_fails_non_finite_outputs():
    """INT8's default tolerance (atol None) judges agreement alone, but NaN logits still fail."""
    from export.parity import Tolerance, check

    tol = Tolerance(None, 0.95)
    check({"outputs": {"logits": 3.0}, "agreement": 0.96, "samples": 64}, tol, "int8")  # any finite diff
    nan = {"outputs": {"logits": float("nan")}, "agreement": 1.0}
    disagree = {"outputs": {"logits": 0.0}, "agreement": 0.9}
    for bad in (nan, disagree):
        with pytest.raises(ParityError, match="not finite|agreement 0.9000"):
            check(bad | {"samples": 64}, tol, "int8")


def test_parity_error_on_corrupted_initializer(tmp_path):
    from export.onnx import check_onnx, export_onnx

    d = write_pruned(tmp_path / "bert", "bert")
    export_onnx(str(d), log=lambda s: None)
    model = onnx.load(str(d / "model.onnx"))
    init = next(t for t in model.graph.initializer if "classifier" in t.name and "weight" in t.name)
    w = onnx.numpy_helper.to_array(init).copy()
    w[0] += 0.5
    init.CopyFrom(onnx.numpy_helper.from_array(w, init.name))
    onnx.save(model, str(d / "broken.onnx"))
    with pytest.raises(ParityError) as e:
        check_onnx(str(d), "broken.onnx", log=lambda s: None)
    msg = str(e.value)
    assert "\n" not in msg and "logits max_abs_diff" in msg and "> tol 1e-04" in msg
    assert check_onnx(str(d), "model.onnx", log=lambda s: None)["max_abs_diff"] <= 1e-5


def test_onnxruntime_engine_records_what_ran(bert_with_data):
    from export.engines import EngineConfig, build_engine

    rep = build_engine(str(bert_with_data), "onnxruntime", EngineConfig(threads=1), log=lambda s: None)
    on_disk = json.loads((bert_with_data / "engine.json").read_text())
    assert on_disk["providers"] == ["CPUExecutionProvider"] == rep["providers"]
    assert on_disk["parity"]["max_abs_diff"] <= 1e-5
    assert (bert_with_data / "engine" / "model.ort.onnx").exists()
    assert (bert_with_data / "engine" / "manifest.json").exists()
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(MissingDependency, match="no CUDAExecutionProvider"):
            build_engine(str(bert_with_data), "onnxruntime", EngineConfig(provider="cuda"), log=lambda s: None)
        # the session itself: ORT falls back to the CPU silently; make_session says so
        from export.engines.ort import make_session

        with pytest.raises(MissingDependency, match="ran CPUExecutionProvider, not the requested CUDAExecutionProvider"):
            make_session(str(bert_with_data / "model.onnx"), "cuda")


def test_engine_errors_are_one_line(bert_with_data):
    from export.engines import EngineConfig, build_engine, get_backend, parse_shape

    with pytest.raises(BadInput, match="known: onnxruntime, tensorrt"):
        get_backend("openvino")
    with pytest.raises(BadInput, match="BATCHxSEQ"):
        parse_shape("8-64")
    with pytest.raises(BadInput, match="min <= opt <= max"):
        build_engine(str(bert_with_data), "tensorrt", EngineConfig(opt_shape=(64, 64)), log=lambda s: None)
    try:
        import tensorrt  # noqa: F401

        has_trt = torch.cuda.is_available()
    except ImportError:
        has_trt = False
    if not has_trt:
        with pytest.raises(MissingDependency) as e:
            build_engine(str(bert_with_data), "tensorrt", log=lambda s: None)
        assert "\n" not in str(e.value) and ("TensorRT" in str(e.value))


def test_tensorrt_inputs_follow_the_family(bert_with_data, tmp_path):
    """The TensorRT profile shapes and INT8 calibration batches (built here without TensorRT):
    [batch, seq] real tokens for text; [batch, C, H, W] real images for a ViT, whatever seq says."""
    from test_vision import _image_folder

    from export.engines import EngineConfig
    from export.engines.trt import calibration_batches, profile_shapes
    from export.samples import load
    from optin.images import ImageProcessor

    cfg = EngineConfig(min_shape=(1, 8), opt_shape=(4, 16), max_shape=(8, 32))
    text = load(str(bert_with_data), log=lambda s: None)
    assert profile_shapes(text, cfg)["input_ids"] == ((1, 8), (4, 16), (8, 32))
    batches, note = calibration_batches(text, (4, 16), 12)
    assert "calibration samples of" in note and len(batches) == 3
    assert all(b["input_ids"].shape == (4, 16) and set(b) == set(text.input_names) for b in batches)

    images = _image_folder(tmp_path / "images", n=8)
    model = tiny_model("vit")
    spec = awkward_spec("vit")
    narrow(adapter_for(model), spec)
    save_pruned(model, ImageProcessor.for_model(model.config), spec, str(tmp_path / "vit"),
                extra={"seq_len": 10, "max_length": 10, "data": f"imagefolder:{images}"})
    vit = load(str(tmp_path / "vit"), log=lambda s: None)
    assert profile_shapes(vit, cfg)["pixel_values"] == ((1, 1, 12, 12), (4, 1, 12, 12), (8, 1, 12, 12))
    batches, note = calibration_batches(vit, (4, 16), 8)
    assert "calibration samples of imagefolder:" in note and len(batches) == 2
    assert all(b["pixel_values"].shape == (4, 1, 12, 12) for b in batches)
