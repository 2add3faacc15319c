"""ONNX Runtime FP16 (CUDA provider) and static INT8 (TensorRT provider) engines on a GPU: built,
checked to run on the provider asked for, scored on the task. Skipped without onnxruntime-gpu
and a GPU (these development machines have neither)."""
import onnxruntime as ort
import pytest

from conftest import awkward_spec, tiny_model, write_tiny_csv, write_tiny_folder


def _has(provider: str) -> bool:
    if provider not in ort.get_available_providers():
        return False
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    from transformers import AutoTokenizer

    from optin.adapters import adapter_for
    from optin.io import save_pruned
    from optin.narrow import narrow

    root = tmp_path_factory.mktemp("ortgpu")
    dense = write_tiny_folder(root / "dense", "bert")
    model = tiny_model("bert")
    narrow(adapter_for(model), awkward_spec("bert"))
    save_pruned(model, AutoTokenizer.from_pretrained(dense), awkward_spec("bert"), str(root / "pruned"),
                extra={"seq_len": 16, "max_length": 16, "source": str(dense),
                       "data": str(write_tiny_csv(root / "data.csv", n=400))})
    return root / "pruned"


@pytest.mark.skipif(not _has("CUDAExecutionProvider"), reason="needs onnxruntime-gpu with CUDA and a GPU")
def test_fp16_on_cuda(folder):
    from export.engines import EngineConfig, build_engine

    rep = build_engine(str(folder), "onnxruntime", EngineConfig(fp16=True, provider="cuda"), log=lambda *_: None)
    assert rep["precision"] == "fp16" and rep["providers"][0] == "CUDAExecutionProvider"
    assert rep["fp16"]["keep_io_types"] and rep["accuracy"]["available"]
    assert rep["accuracy"]["agreement_with_torch"] >= 0.95


@pytest.mark.skipif(not _has("TensorrtExecutionProvider"), reason="needs onnxruntime-gpu with TensorRT and a GPU")
def test_static_int8_on_tensorrt_provider(folder):
    from export.engines import EngineConfig, build_engine
    from export.quantize import QuantConfig

    rep = build_engine(str(folder), "onnxruntime", EngineConfig(int8=True, provider="tensorrt",
                                                                 quant=QuantConfig(mode="static")), log=lambda *_: None)
    assert rep["providers"][0] == "TensorrtExecutionProvider"
    assert rep["quantization"]["activation_type"] == "QInt8" and rep["quantization"]["activation_symmetric"]
