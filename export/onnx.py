"""`optin export`: a model folder → DIR/model.onnx (+ model.opt.onnx), checked against PyTorch.

Exporter: TorchScript (`dynamo=False`, opset 17) by default: on these machines its graphs ran
5–11% faster in ONNX Runtime CPU, and ORT's transformer optimizer fuses only its attention
pattern. `dynamo=True` (opset 18+, needs onnxscript) is kept for newer operator sets.
Inputs as the family adapter names them (input_ids, attention_mask (+ token_type_ids where the
model has token types) for text; pixel_values for images), output logits; batch and (text)
sequence axes are dynamic. Files are written under a temporary name and
renamed only after parity passes, so a model.onnx on disk always matches its model.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings

import torch

from optin.errors import BadInput, ExportError

from .parity import TOL, Tolerance, verify

DEFAULT_OPSET = {False: 17, True: 18}   # keyed by dynamo


class _Logits(torch.nn.Module):
    """ONNX inputs in a fixed order → keyword model call → logits only."""

    def __init__(self, model, names):
        super().__init__()
        self.model, self.names = model, list(names)

    def forward(self, *args):
        return self.model(**dict(zip(self.names, args))).logits


def _example(adapter) -> tuple:
    # batch 2, seq 16, one padded row: a batch of 1 or a constant length can be traced as a constant
    inputs = adapter.random_inputs(2, 16, torch.Generator().manual_seed(0))
    if "attention_mask" in inputs:
        inputs["attention_mask"][:] = 1
        inputs["attention_mask"][1, 11:] = 0
    return tuple(inputs[n] for n in adapter.input_names())


@contextlib.contextmanager
def _eager_attention(model):
    """Export attention as written (q·kᵀ + additive mask, softmax). SDPA is traced into a Where
    that turns the mask into −inf and an IsNaN + Where after each softmax; eager ran 1.09x (float32)
    and 1.21x (dynamic INT8) as fast on minilm-rt, ORT CPU, b8 × 64 (bench/export_attention.py).
    Restored afterwards."""
    impl = getattr(model.config, "_attn_implementation", None)
    if impl in (None, "eager"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(impl)


def _torch_export(model, names, path: str, opset: int, dynamo: bool, eager_attention: bool = True) -> None:
    from optin.adapters import adapter_for

    adapter = adapter_for(model)
    axes = adapter.dynamic_axes()  # {input: {axis: name}}: batch (and sequence for text)
    kw = dict(input_names=names, output_names=["logits"], opset_version=opset, dynamo=dynamo)
    if dynamo:
        dims = {a: torch.export.Dim(a) for ax in axes.values() for a in ax.values()}
        # one entry: forward(*args) packs every input into one varargs tuple for torch.export
        kw.update(dynamic_shapes=(tuple({i: dims[a] for i, a in axes[n].items()} for n in names),),
                  external_data=False, verbose=False)
    else:
        kw.update(dynamic_axes=axes | {"logits": {0: "batch"}}, do_constant_folding=True)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # the dynamo exporter logs every torchvision op it cannot register
    try:
        with warnings.catch_warnings(), torch.no_grad(), \
                (_eager_attention(model) if eager_attention else contextlib.nullcontext()):
            warnings.simplefilter("ignore")  # tracer and deprecation warnings, not actionable here
            # eval() on the wrapper too: the exporter restores the wrapper's mode afterwards, and a
            # wrapper left in training mode would switch dropout on in the wrapped model
            torch.onnx.export(_Logits(model, names).eval(), _example(adapter), path, **kw)
    except Exception as e:  # torch.onnx raises many types; one line for the user
        raise ExportError(f"torch.onnx.export ({'dynamo' if dynamo else 'torchscript'}, opset {opset}) failed: "
                          f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}") from e
    finally:
        model.eval()
        quiet.setLevel(level)


def _axes(model) -> dict:
    from optin.adapters import adapter_for

    return adapter_for(model).dynamic_axes()


def _ort_check(loaded, path: str, what: str, tol: Tolerance, samples: int, data) -> dict:
    from .engines.ort import OrtSession, make_session

    return verify(loaded, OrtSession(make_session(path, "cpu", "all")), what, tol, samples, data)


def _optimize(path: str, out: str) -> dict:
    """ORT transformer optimizer. num_heads=0, hidden_size=0 make it read each layer's head count
    from the graph: forcing 12 writes 12 heads into pruned layers and the session then fails."""
    from onnxruntime.transformers.optimizer import optimize_model

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = optimize_model(path, model_type="bert", num_heads=0, hidden_size=0)
        opt.save_model_to_file(out)
    except Exception as e:
        raise ExportError(f"onnxruntime transformer optimizer failed: {type(e).__name__}: {e}".splitlines()[0]) from e
    return {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}


def export_onnx(model_dir: str, opset: int | None = None, optimize: bool = False, dynamo: bool = False,
                tol: float = TOL, samples: int = 64, out_dir: str | None = None, data: str | None = None,
                log=print) -> dict:
    """Export, check parity with ONNX Runtime CPU on real samples, optionally optimise; write export.json.

    out_dir defaults to model_dir; a dense model (zoo name, HF folder) is exported into a folder of
    its own, whose export.json points back at the source so it can be reloaded for parity.
    """
    from optin.io import write_json
    from optin.report import versions

    from .samples import load, source_id

    opset = opset or DEFAULT_OPSET[dynamo]
    if dynamo and opset < 18:
        raise BadInput(f"the dynamo exporter needs opset 18 or newer, got {opset}")
    if not dynamo and opset > 20:
        raise BadInput(f"the TorchScript exporter supports opset up to 20, got {opset}; use --dynamo")
    t0 = time.time()
    loaded = load(model_dir, log=log)
    out_dir = out_dir or model_dir
    os.makedirs(out_dir, exist_ok=True)
    data = data or loaded.meta.get("data")
    tolerance = Tolerance(atol=tol)
    final, tmp = os.path.join(out_dir, "model.onnx"), os.path.join(out_dir, ".model.onnx.tmp")
    report = {"command": "export", "opset": opset, "exporter": "dynamo" if dynamo else "torchscript",
              "onnx_file": "model.onnx", "inputs": loaded.input_names, "outputs": ["logits"],
              "dynamic_axes": sorted({a for ax in _axes(loaded.model).values() for a in ax.values()}),
              "source": source_id(loaded.path),
              "pruned": loaded.pruned, "data": data, "max_length": loaded.meta.get("max_length")}
    opt_final, opt_tmp = os.path.join(out_dir, "model.opt.onnx"), os.path.join(out_dir, ".model.opt.onnx.tmp")
    try:
        _torch_export(loaded.model, loaded.input_names, tmp, opset, dynamo)
        report["parity"] = _ort_check(loaded, tmp, final, tolerance, samples, data)
        if optimize:
            fused = _optimize(tmp, opt_tmp)
            parity = _ort_check(loaded, opt_tmp, opt_final, tolerance, samples, data)
            report["optimized"] = {"onnx_file": "model.opt.onnx", "fused_operators": fused, "parity": parity}
        # rename only when every check passed; an older model.opt.onnx no longer matches model.onnx
        os.replace(tmp, final)
        if optimize:
            os.replace(opt_tmp, opt_final)
        elif os.path.exists(opt_final):
            os.remove(opt_final)
    finally:
        for p in (tmp, opt_tmp):
            if os.path.exists(p):
                os.remove(p)
    report.update(seconds=time.time() - t0, versions=versions())
    write_json(os.path.join(out_dir, "export.json"), report)
    log(summary(report))
    return report


def check_onnx(model_dir: str, onnx_file: str = "model.onnx", tol: float = TOL, samples: int = 64, log=print) -> dict:
    """Re-check an ONNX file on disk against the model folder it came from (ParityError if off)."""
    from .samples import load

    loaded = load(model_dir, log=log)
    path = onnx_file if os.path.isabs(onnx_file) else os.path.join(model_dir, onnx_file)
    return _ort_check(loaded, path, path, Tolerance(atol=tol), samples, loaded.meta.get("data"))


def ensure_onnx(model_dir: str, onnx_file: str = "model.onnx", log=print) -> str:
    """Path of DIR/onnx_file, exporting with the defaults first if it is model.onnx and missing."""
    path = os.path.join(model_dir, onnx_file)
    if os.path.exists(path):
        return path
    if onnx_file != "model.onnx":
        raise BadInput(f"{path} does not exist; run `optin export {model_dir}"
                       f"{' --optimize' if onnx_file == 'model.opt.onnx' else ''}` first")
    log(f"optin: {path} missing; exporting it first")
    export_onnx(model_dir, log=log)
    return path


def summary(r: dict) -> str:
    p = r["parity"]
    s = (f"optin export: {r['onnx_file']} ({r['exporter']}, opset {r['opset']}); parity max_abs_diff "
         f"{p['max_abs_diff']:.2e}, agreement {p['agreement']:.3f} on {p['samples']} samples")
    if "optimized" in r:
        o = r["optimized"]
        fused = ", ".join(f"{k} {v}" for k, v in o["fused_operators"].items()) or "nothing fused"
        s += f"; model.opt.onnx: {fused}, max_abs_diff {o['parity']['max_abs_diff']:.2e}"
    if "random" in p.get("source", ""):
        s += f" [{p['source']}]"
    return s + f"; {r['seconds']:.1f} s"
