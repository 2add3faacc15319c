"""ONNX Runtime backend. The "engine" is a checked session configuration (provider, graph
optimisation level, threads) plus the graph ORT optimised for it, saved for inspection.

onnxruntime-gpu falls back to the CPU provider without an error when CUDA or TensorRT cannot
start (no GPU, missing cuDNN): every session checks `get_providers()` and refuses to pretend.
"""
from __future__ import annotations

import os

from optin.errors import BadInput, MissingDependency
from optin.files import check_onnx

from . import EngineBuildError, register

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}
LEVELS = ("disable", "basic", "extended", "all")


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise MissingDependency("onnxruntime is not installed: pip install onnxruntime "
                                "(or onnxruntime-gpu, never both)") from e
    return onnxruntime


def make_session(onnx_file: str, provider: str = "cpu", level: str = "all", threads: int | None = None,
                 spin: bool = False, optimized_out: str | None = None):
    """An InferenceSession on the requested provider, or MissingDependency if another one ran.

    spin=False stops idle intra-op threads from busy-waiting. On a machine shared with other
    work (CI runners, these 2-core dev boxes) spinning threads fight the neighbours: measured
    here, MiniLM at 2 threads took 212 ms with spinning and 135 ms without, under load."""
    ort = _ort()
    if provider not in PROVIDERS:
        raise BadInput(f"unknown provider {provider!r}; known: {', '.join(PROVIDERS)}")
    if level not in LEVELS:
        raise BadInput(f"unknown graph optimization level {level!r}; known: {', '.join(LEVELS)}")
    want = PROVIDERS[provider]
    chain = list(dict.fromkeys([want, *(["CUDAExecutionProvider"] if provider == "tensorrt" else []),
                                "CPUExecutionProvider"]))
    available = ort.get_available_providers()
    so = ort.SessionOptions()
    g = ort.GraphOptimizationLevel
    so.graph_optimization_level = {"disable": g.ORT_DISABLE_ALL, "basic": g.ORT_ENABLE_BASIC,
                                   "extended": g.ORT_ENABLE_EXTENDED, "all": g.ORT_ENABLE_ALL}[level]
    so.log_severity_level = 3  # errors only: provider fallbacks are reported by us, in one line
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if optimized_out:
        so.optimized_model_filepath = optimized_out
    try:
        sess = ort.InferenceSession(onnx_file, so, providers=[p for p in chain if p in available])
    except Exception as e:  # ORT raises its own Fail/InvalidGraph types: one line is enough
        check_onnx(onnx_file, e)  # a truncated or garbage file: name it and how to re-export it
        raise EngineBuildError(f"ONNX Runtime cannot load {onnx_file}: {str(e).strip().splitlines()[0]}") from e
    ran = sess.get_providers()
    if ran[0] != want:
        raise MissingDependency(
            f"ONNX Runtime ran {ran[0]}, not the requested {want} (available: {', '.join(available)}); "
            "install onnxruntime-gpu (not beside onnxruntime) on a machine with an NVIDIA GPU, CUDA and cuDNN")
    return sess


class OrtSession:
    """Callable on a batch of torch tensors; `bind` + `run` for timing without per-call conversion."""

    def __init__(self, sess):
        self.sess = sess
        self.inputs = [i.name for i in sess.get_inputs()]
        self.outputs = [o.name for o in sess.get_outputs()]
        self.providers = sess.get_providers()
        self._feeds = None

    def __call__(self, batch: dict) -> dict:
        feeds = {k: batch[k].numpy() for k in self.inputs}
        return dict(zip(self.outputs, self.sess.run(None, feeds)))

    def bind(self, batch: dict) -> None:
        self._feeds = {k: batch[k].numpy() for k in self.inputs}

    def run(self) -> None:
        self.sess.run(None, self._feeds)


@register
class OnnxRuntimeBackend:
    name = "onnxruntime"

    def available(self, cfg) -> None:
        ort = _ort()
        want = PROVIDERS.get(cfg.provider)
        if want and want not in ort.get_available_providers():  # fail before any work; sessions re-check
            raise MissingDependency(f"this onnxruntime has no {want} (available: {', '.join(ort.get_available_providers())}); "
                                    "install onnxruntime-gpu (not beside onnxruntime) on a machine with an NVIDIA GPU")
        if cfg.fp16 or cfg.int8:
            raise BadInput("--fp16/--int8 are TensorRT build options; ONNX Runtime runs the float32 ONNX "
                           "file as exported (use --backend tensorrt, or --provider tensorrt)")

    def build(self, onnx_file: str, out_dir: str, cfg, loaded, log=print) -> dict:
        from ..parity import MIN_AGREEMENT, TOL, Tolerance, verify

        opt = os.path.join(out_dir, "model.ort.onnx")
        session = OrtSession(make_session(onnx_file, cfg.provider, cfg.level, cfg.threads, cfg.spin, optimized_out=opt))
        tol = Tolerance(TOL if cfg.tol is None else cfg.tol,
                        MIN_AGREEMENT if cfg.min_agreement is None else cfg.min_agreement)
        parity = verify(loaded, session, f"ONNX Runtime ({session.providers[0]}) session of {onnx_file}", tol)
        return {"precision": "fp32", "providers": session.providers, "onnx_file": os.path.basename(onnx_file),
                "optimized_file": "engine/model.ort.onnx", "graph_optimization_level": cfg.level,
                "intra_op_threads": cfg.threads, "allow_spinning": cfg.spin, "parity": parity}

    def open(self, model_dir: str, cfg) -> OrtSession:
        path = os.path.join(model_dir, cfg.onnx_file)
        return OrtSession(make_session(path, cfg.provider, cfg.level, cfg.threads, cfg.spin))
