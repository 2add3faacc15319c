"""OPTIN: one-shot trajectory-based structured pruning of transformers and CNNs, to a MAC budget.

In Python (the CLI calls the same functions):

    result = optin.prune_model(model, calib, flops=0.5, processor=tokenizer)  # nothing written
    result.save("pruned/")                      # loads with from_pretrained(..., trust_remote_code=True)
    optin.export_onnx("pruned/")                # ONNX + parity
    optin.profile("pruned/", against=DENSE_DIR) # latency against dense, interleaved
    optin.gate("pruned/", min_speedup=1.5)      # the CI verdict
"""
from .errors import OptinError
from .io import load_pruned
from .spec import PruneSpec

__version__ = "0.1.0"
__all__ = ["OptinError", "PruneConfig", "PruneResult", "PruneSpec", "export_onnx", "gate", "load_pruned", "profile",
           "prune", "prune_model"]


def __getattr__(name):  # PruneConfig / PruneResult without importing torch at `import optin`
    if name in ("PruneConfig", "PruneResult", "ReconConfig"):
        import importlib

        return getattr(importlib.import_module("optin.prune"), name)  # `optin.prune` the attribute is a function
    raise AttributeError(f"module 'optin' has no attribute {name!r}")


def prune_model(model, calib, flops=None, method=None, **kwargs):
    """Prune a model object in memory; see optin.prune.prune_model."""
    from .prune import prune_model as _prune_model

    return _prune_model(model, calib, flops, method, **kwargs)


def prune(model, data, out, cfg=None):
    """Library entry point of `optin prune` (a model and data spec, a folder out); see optin.prune.PruneConfig."""
    from .prune import PruneConfig, prune as _prune

    return _prune(model, data, out, cfg or PruneConfig())


def export_onnx(model_dir, **kwargs) -> dict:
    """`optin export`: ONNX beside a pruned folder (a path, or a PruneResult already saved), parity checked."""
    from export.onnx import export_onnx as _export

    return _export(_folder(model_dir), **kwargs)


def profile(model_dir, against=None, **kwargs) -> dict:
    """`optin profile`: latency of a pruned folder against its dense model, interleaved;
    kwargs are profiling.latency.ProfileConfig's (backend, batch, seq, iters, ...)."""
    from profiling.latency import ProfileConfig, profile as _profile

    return _profile(_folder(model_dir), ProfileConfig(against=against, **kwargs))


def gate(model_dir, **kwargs) -> dict:
    """`optin gate`: pass/fail on the folder's reports (min_speedup, min_flop_efficiency, max_accuracy_drop)."""
    from profiling.gate import gate as _gate

    return _gate(_folder(model_dir), **kwargs)


def _folder(obj) -> str:
    saved = getattr(obj, "saved_to", None)
    if saved is None and not isinstance(obj, str):
        from .errors import BadInput

        raise BadInput("save the result first (result.save(DIR)), then pass DIR")
    return saved or obj
