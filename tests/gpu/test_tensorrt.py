"""TensorRT engines for a tiny awkward pruned model: build, manifest, parity against ONNX Runtime,
and the profile runner. Skipped (with the reason) where TensorRT or a CUDA GPU is missing."""
import json

import numpy as np
import pytest

from conftest import tiny_batches, tiny_model
from optin.adapters import adapter_for
from optin.io import save_pruned
from optin.narrow import narrow
from optin.spec import PruneSpec


@pytest.fixture(scope="module")
def pruned(tmp_path_factory):
    d = tmp_path_factory.mktemp("trt") / "bert"
    model = tiny_model("bert")
    spec = PruneSpec("bert", 4, 48, ((0, 2), (), (1, 2, 3)), (tuple(range(0, 48, 2)), tuple(range(10)), ()))
    narrow(adapter_for(model), spec)
    save_pruned(model, None, spec, str(d), extra={"seq_len": 16, "max_length": 16, "data": None})
    from export.onnx import export_onnx

    export_onnx(str(d), log=lambda s: None)
    return d


def _ort_logits(d, batch):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
    return sess.run(None, {i.name: batch[i.name].numpy() for i in sess.get_inputs()})[0]


@pytest.mark.parametrize("fp16,atol", [(False, 1e-3), (True, 5e-2)])
def test_engine_matches_onnxruntime(pruned, trt_version, fp16, atol):
    from export.engines import EngineConfig, build_engine
    from export.engines.trt import TrtSession

    cfg = EngineConfig(fp16=fp16, min_shape=(1, 4), opt_shape=(4, 16), max_shape=(8, 32), workspace_mib=256)
    rep = build_engine(str(pruned), "tensorrt", cfg, log=lambda s: None)
    man = json.loads((pruned / "engine" / "manifest.json").read_text())
    assert man["tensorrt"] == trt_version and man["precision"] == ("fp16" if fp16 else "fp32")
    assert {"cuda", "driver", "gpu", "sha256", "shapes"} <= set(man) and man["shapes"]["max"] == [8, 32]
    assert rep["parity"]["agreement"] >= 0.99
    session = TrtSession(str(pruned / "engine" / "engine.plan"))
    b = tiny_batches(1, batch=5, seq=13)[0]
    b = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"],
         "token_type_ids": b["input_ids"] * 0}
    got = session(b)["logits"]
    assert np.abs(got - _ort_logits(pruned, b)).max() <= atol


def test_tensorrt_profile_and_int8(pruned, trt_version):
    from export.engines import EngineConfig, build_engine
    from profiling.latency import ProfileConfig, profile

    # a tiny random model calibrated on random tokens: only the build and the runner are under test here
    cfg = EngineConfig(int8=True, min_shape=(1, 4), opt_shape=(4, 16), max_shape=(8, 32), calib_samples=32,
                       workspace_mib=256, tol=1e3, min_agreement=0.0)
    rep = build_engine(str(pruned), "tensorrt", cfg, log=lambda s: None)
    assert rep["precision"] == "int8" and "random tokens" in rep["int8_calibration"]
    prof = profile(str(pruned), ProfileConfig(backend="tensorrt", batch=4, seq=16, iters=20, warmup=5),
                   log=lambda s: None)
    assert prof["providers"] == ["TensorRT"] and prof["latency_ms"]["median"] > 0
    assert "gpu" in prof["versions"]
