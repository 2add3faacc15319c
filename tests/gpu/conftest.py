"""GPU fixtures: every test here needs TensorRT and a CUDA GPU, and skips with the reason otherwise."""
import pytest


def _missing() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "TensorRT is not installed (runs in the docker/Dockerfile.gpu image)"
    try:
        import torch
    except ImportError:
        return "torch is not installed"
    if not torch.cuda.is_available():
        return f"no CUDA GPU visible to torch {torch.__version__} (CUDA build: {torch.version.cuda or 'none'})"
    return None


def pytest_collection_modifyitems(config, items):
    why = _missing()
    for item in items:
        path = str(item.fspath).replace("\\", "/")
        if "tests/gpu" in path:
            item.add_marker(pytest.mark.gpu)
            # the TensorRT tests need TensorRT; the ONNX Runtime GPU tests skip on their own provider check
            if why and "test_tensorrt" in path:
                item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="session")
def trt_version():
    import tensorrt

    return tensorrt.__version__
