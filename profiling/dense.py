"""The models a profile compares against, and the engine settings each one runs with.

Two references for an engine of reduced precision (INT8, FP16):
- DIR/dense/: the dense model in float32, the deployment it replaces (`speedup` in profile.json);
- DIR/dense-<precision>/: the dense model built the same way (same precision and quantisation
  settings), the fair comparison for what pruning itself gained (`same_precision`).
A float32 engine has only the first. Folders are made once and reused while they match.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import asdict, replace

from optin.errors import BadInput


def engine_cfg(model_dir: str, cfg, follow_built: bool = True):
    """Engine settings: the caller's, with those the folder's engine was built with (engine.json)
    where they decide what runs: TensorRT's precision and profile; ONNX Runtime's precision and
    quantisation (its INT8 / FP16 graph lives in DIR/engine/)."""
    from export.engines import EngineConfig
    from export.quantize import QuantConfig
    from optin.io import read_json

    ecfg = cfg.engine or EngineConfig()
    built = read_json(os.path.join(model_dir, "engine.json")) if follow_built else None
    if not built or built.get("backend") != cfg.backend:
        return ecfg
    c = built["config"]
    if cfg.backend == "tensorrt":
        ecfg = replace(ecfg, fp16=c["fp16"], int8=c["int8"], min_shape=tuple(c["min_shape"]),
                       opt_shape=tuple(c["opt_shape"]), max_shape=tuple(c["max_shape"]))
        for b, s in [(cfg.batch, cfg.seq), *[(x, cfg.seq) for x in cfg.sweep_batch], *[(cfg.batch, x) for x in cfg.sweep_seq]]:
            if not all(lo <= v <= hi for v, lo, hi in zip((b, s), ecfg.min_shape, ecfg.max_shape)):
                raise BadInput(f"shape {b}x{s} is outside the engine's profile {ecfg.min_shape}..{ecfg.max_shape}; "
                               "rebuild it with `optin engine --min-shape/--max-shape`")
    elif cfg.backend == "onnxruntime" and (c.get("int8") or c.get("fp16")):
        q = c.get("quant") or {}
        ecfg = replace(ecfg, fp16=c["fp16"], int8=c["int8"], calib_samples=c.get("calib_samples", ecfg.calib_samples),
                       quant=QuantConfig(**{**q, "ops": tuple(q["ops"]) if q.get("ops") else None}))
        if ecfg.fp16 and ecfg.provider == "cpu":
            raise BadInput(f"the engine in {model_dir} is float16, built for provider {c['provider']}; "
                           f"profile it with --provider {c['provider']}")
    return ecfg


def dense_dir(model_dir: str, against: str, cfg, data: str | None, split: dict | None, log) -> str:
    """The float32 dense model's folder: another model folder as is, else the dense model exported
    (and, for TensorRT, built in float32) into DIR/dense/ once. split: the pruner's calib / seed /
    eval_limit, kept in export.json so the dense folder reads the same test examples."""
    from export.onnx import export_onnx
    from export.samples import is_pruned, source_id
    from optin.io import read_json, write_json
    from optin.zoo import resolve_model

    if os.path.isdir(against) and (is_pruned(against) or os.path.exists(os.path.join(against, "export.json"))):
        return against
    src = source_id(resolve_model(against, log=log))
    if cfg.backend == "torch":
        return src  # eager PyTorch needs no exported artifact
    out = os.path.join(model_dir, "dense")
    exp = read_json(os.path.join(out, "export.json"))
    onnx_file = cfg.engine.onnx_file
    if not (exp and exp.get("source") == src and os.path.exists(os.path.join(out, onnx_file))):
        log(f"optin profile: exporting the dense model {against} into {out}")
        exp = export_onnx(src, out_dir=out, data=data, optimize=onnx_file == "model.opt.onnx", log=log)
    if split and exp.get("split") != split:
        write_json(os.path.join(out, "export.json"), exp | {"split": split})
    if cfg.backend == "tensorrt":
        fp32 = replace(cfg.engine, fp16=False, int8=False)
        if _stale(out, fp32):
            from export.engines import build_engine

            build_engine(out, "tensorrt", fp32, log=log)
    return out


def same_precision_dir(model_dir: str, dense: str, cfg, log) -> str | None:
    """DIR/dense-<precision>/: the dense model's engine at the target's precision and settings
    (the ONNX file linked from the float32 dense folder); None for a float32 target."""
    from export.engines import build_engine
    from optin.io import read_json, write_json

    prec = cfg.engine.precision
    if prec == "fp32" or cfg.backend == "torch":
        return None
    out = os.path.join(model_dir, f"dense-{prec}")
    if not _stale(out, cfg.engine):
        return out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    exp = read_json(os.path.join(dense, "export.json")) or {}
    if not exp.get("source"):
        raise BadInput(f"{dense} has no export.json naming its source; give --against a dense model (zoo name or "
                       "Hugging Face folder) to compare a reduced-precision engine with")
    src = os.path.join(dense, cfg.engine.onnx_file)
    try:
        os.link(src, os.path.join(out, cfg.engine.onnx_file))  # the same file: no copy of the weights
    except OSError:
        shutil.copyfile(src, os.path.join(out, cfg.engine.onnx_file))
    write_json(os.path.join(out, "export.json"), exp)
    log(f"optin profile: building the dense model's {prec} engine into {out} (the same-precision comparison)")
    build_engine(out, cfg.backend, cfg.engine, log=log)
    return out


def _stale(folder: str, ecfg) -> bool:
    """True unless folder's engine.json was built with exactly these settings."""
    from optin.io import read_json

    built = read_json(os.path.join(folder, "engine.json"))
    return not built or _jsonish(built.get("config")) != _jsonish(asdict(ecfg))


def _jsonish(d):
    import json

    return json.loads(json.dumps(d, default=list))
