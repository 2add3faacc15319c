"""Engine backends, registered by name: `build_engine(DIR, backend, cfg)` → DIR/engine/ + DIR/engine.json.

A backend is a small class with `build(onnx_file, out_dir, cfg, loaded) -> manifest` and
`open(model_dir, cfg) -> session`; a session binds inputs once (`bind`) and runs them (`run`),
which is all that parity checks and profiling/latency need. Backends import their runtime
(onnxruntime, tensorrt) inside their methods, so a missing runtime fails only when used.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field

from optin.errors import BadInput, EngineBuildError  # noqa: F401  (re-exported for backends)

from ..quantize import QuantConfig

BACKENDS: dict[str, type] = {}


def register(cls):
    BACKENDS[cls.name] = cls
    return cls


def get_backend(name: str):
    if name not in BACKENDS:
        raise BadInput(f"unknown engine backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name]()


@dataclass(frozen=True)
class EngineConfig:
    provider: str = "cpu"               # onnxruntime: cpu, cuda, tensorrt
    level: str = "all"                  # onnxruntime graph optimization: disable, basic, extended, all
    threads: int | None = None          # onnxruntime intra-op threads (None: ORT's default)
    spin: bool = False                  # onnxruntime busy-waiting threads: off, see ort.make_session
    fp16: bool = False
    int8: bool = False
    min_shape: tuple[int, int] = (1, 8)     # (batch, seq) of the TensorRT optimization profile
    opt_shape: tuple[int, int] = (8, 64)
    max_shape: tuple[int, int] = (32, 128)
    workspace_mib: int = 2048
    calib_samples: int = 256            # INT8 calibration snippets
    onnx_file: str = "model.onnx"
    tol: float | None = None            # parity overrides (None: the backend's default for the precision)
    min_agreement: float | None = None
    quant: QuantConfig = field(default_factory=QuantConfig)   # ONNX Runtime INT8 (export.quantize)
    eval: bool = True                   # task accuracy on the test split into engine.json
    eval_limit: int | None = None       # at most N test examples (None: the pruner's own limit)

    @property
    def precision(self) -> str:
        return "int8" if self.int8 else "fp16" if self.fp16 else "fp32"

    def check(self) -> None:
        if self.int8:
            self.quant.check()
        if self.calib_samples < 1 or (self.eval_limit is not None and self.eval_limit < 1):
            raise BadInput("--calib and --eval-limit must be positive")
        lo, mid, hi = self.min_shape, self.opt_shape, self.max_shape
        if not all(a <= b <= c for a, b, c in zip(lo, mid, hi)) or min(lo) < 1:
            raise BadInput(f"shapes must satisfy 1 <= min <= opt <= max per axis (batch x seq), got "
                           f"min {_bxs(lo)}, opt {_bxs(mid)}, max {_bxs(hi)}")


def _bxs(s) -> str:
    return f"{s[0]}x{s[1]}"


def parse_shape(text: str) -> tuple[int, int]:
    """'8x64' → (8, 64): batch x sequence length."""
    try:
        b, s = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise BadInput(f"shape {text!r} must be BATCHxSEQ, e.g. 8x64") from None
    return b, s


def build_engine(model_dir: str, backend: str, cfg: EngineConfig = EngineConfig(), log=print) -> dict:
    """Export (if needed) → build with the backend → parity against PyTorch → DIR/engine.json."""
    from optin.io import staged_dir, write_json
    from optin.report import versions

    from ..onnx import ensure_onnx
    from ..samples import load

    cfg.check()
    be = get_backend(backend)
    be.available(cfg)                   # MissingDependency before any work
    onnx_file = ensure_onnx(model_dir, cfg.onnx_file, log=log)
    loaded = load(model_dir, log=log)
    t0 = time.time()
    engine_dir = os.path.join(model_dir, "engine")
    with staged_dir(engine_dir) as tmp:
        manifest = be.build(onnx_file, tmp, cfg, loaded, log=log)
        write_json(os.path.join(tmp, "manifest.json"), manifest)
    stale = os.path.join(model_dir, "engine.json")
    if os.path.exists(stale):  # it describes the engine just replaced
        os.remove(stale)
    manifest["accuracy"] = _accuracy(be, model_dir, cfg, loaded, log)
    report = {"command": "engine", "backend": backend, "engine_dir": "engine", "config": asdict(cfg),
              **manifest, "seconds": time.time() - t0, "versions": versions()}
    write_json(os.path.join(model_dir, "engine.json"), report)
    log(summary(report))
    return report


def _accuracy(be, model_dir: str, cfg: EngineConfig, loaded, log) -> dict:
    """The built engine on the task (export.accuracy), opened as profiling will open it."""
    from ..accuracy import engine_accuracy

    if not cfg.eval:
        return {"available": False, "reason": "not evaluated (eval off)"}
    limits = (cfg.min_shape, cfg.max_shape) if getattr(be, "shape_profile", False) else None
    return engine_accuracy(loaded, be.open(model_dir, cfg), cfg.eval_limit, limits, log=log)


def summary(r: dict) -> str:
    p, a = r.get("parity", {}), r.get("accuracy") or {}
    s = (f"optin engine: {r['backend']} {r.get('precision', 'fp32')} on {', '.join(r.get('providers', [])) or '?'}; "
         f"parity max_abs_diff {p.get('max_abs_diff', float('nan')):.2e}, agreement {p.get('agreement', 0):.3f} "
         f"({p.get('samples', 0)} samples)")
    if a.get("available"):
        s += f"; test {a.get('metric', 'accuracy')} {a['engine']:.2%} (PyTorch {a['torch']:.2%}"
        s += ")" if a["dense"] is None else f", dense {a['dense']:.2%}, drop {a['drop_vs_dense_points']:+.2f} pt)"
    return s + f"; {r['seconds']:.1f} s"


# Register the built-in backends (their runtimes are imported lazily inside).
from . import ort as _ort  # noqa: E402,F401
from . import trt as _trt  # noqa: E402,F401
