"""TensorRT backend: ONNX → serialized engine (engine/engine.plan) + manifest, and a runner.

The build is one readable function in the shape of TensorRT's samples: logger, builder,
explicit-batch network, ONNX parser (every parser error listed on failure), builder config with
one optimization profile (min/opt/max over batch and sequence), FP16/INT8 flags, a timing cache
reused across builds, build_serialized_network. Profile shapes and INT8 calibration batches come
from the model's family (token ids, or images through the model's own processor). `tensorrt` and
CUDA tensors (through torch) are imported only in here.
"""
from __future__ import annotations

import hashlib
import os
import subprocess

from optin.errors import BadInput, MissingDependency

from . import EngineBuildError, register

# Default parity tolerances per precision. FP32 engines run TF32 matmuls on Ampere and newer
# GPUs (TensorRT's default), hence 1e-3 rather than the ONNX file's 1e-4.
TOLERANCE = {"fp32": (1e-3, 0.999), "fp16": (5e-2, 0.99), "int8": (None, 0.90)}  # INT8: agreement alone, as ort.py


def _trt():
    try:
        import tensorrt
    except ImportError as e:
        raise MissingDependency("TensorRT is not installed (the PyPI `tensorrt` wheel fetches its libraries from "
                                "NVIDIA's index); use docker/Dockerfile.gpu or install TensorRT for your CUDA") from e
    return tensorrt


def _cuda():
    try:
        import torch
    except ImportError as e:
        raise MissingDependency("the TensorRT runner needs torch with CUDA") from e
    if not torch.cuda.is_available():
        raise MissingDependency(f"no CUDA GPU is visible to torch {torch.__version__} "
                                f"(CUDA build: {torch.version.cuda or 'none, CPU-only wheel'}); TensorRT needs an NVIDIA GPU")
    return torch


def _precision(cfg) -> str:
    return "int8" if cfg.int8 else "fp16" if cfg.fp16 else "fp32"


def _driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def gpu_versions() -> dict:
    trt, torch = _trt(), _cuda()
    p = torch.cuda.get_device_properties(0)
    return {"tensorrt": trt.__version__, "cuda": torch.version.cuda, "driver": _driver(), "gpu": p.name,
            "compute_capability": f"{p.major}.{p.minor}"}


def _trt_dtype_to_torch(trt, torch, dt):
    pairs = [("float32", "float32"), ("float16", "float16"), ("bfloat16", "bfloat16"), ("int32", "int32"),
             ("int64", "int64"), ("int8", "int8"), ("bool", "bool")]
    table = {getattr(trt, a): getattr(torch, b) for a, b in pairs if hasattr(trt, a)}  # int64: TensorRT 10+
    if dt not in table:
        raise EngineBuildError(f"engine tensor type {dt} is not supported by the runner")
    return table[dt]


def profile_shapes(loaded, cfg) -> dict[str, tuple]:
    """(min, opt, max) full shape of every input at the profile's (batch, seq) corners, taken from
    the family's own example inputs: token inputs are [batch, seq]; an image input is
    [batch, C, H, W] and has no sequence axis to vary."""
    import torch

    from ..samples import random_batch

    g = torch.Generator().manual_seed(0)
    corners = [random_batch(loaded.model.config, b, s, g, loaded.input_names, model=loaded.model)
               for b, s in (cfg.min_shape, cfg.opt_shape, cfg.max_shape)]
    return {n: tuple(tuple(c[n].shape) for c in corners) for n in loaded.input_names}


def calibration_batches(loaded, shape, n: int):
    """Fixed-shape [opt batch, opt seq] batches of real calibration samples through the model's own
    processor (tokenizer: padded to the opt length; images: the model's resolution), else random
    inputs of the family, and a line saying which."""
    import torch

    from optin.data import make_batches

    from ..samples import calib_examples, random_batch

    b, s = shape
    ex, why = calib_examples(loaded.meta.get("data"), n) if loaded.tokenizer is not None else (None, "no processor")
    names = loaded.input_names
    if ex is not None and len(ex) < b:
        ex, why = None, f"fewer than {b} calibration samples"
    if not ex:
        g = torch.Generator().manual_seed(0)
        return [random_batch(loaded.model.config, b, s, g, names, ragged=True, model=loaded.model)
                for _ in range(max(1, n // b))], f"random inputs ({why})"
    out = []
    for batch in make_batches(loaded.tokenizer, ex[:len(ex) // b * b], b, s, with_labels=False):
        if "input_ids" in batch:  # one fixed sequence length: the calibration profile's opt shape
            extra = s - batch["input_ids"].shape[1]
            batch = {k: torch.nn.functional.pad(v, (0, extra)) for k, v in batch.items()} if extra > 0 else batch
        out.append({k: batch[k] if k in batch else torch.zeros_like(batch["input_ids"]) for k in names})
    return out, f"{len(out) * b} calibration samples of {loaded.meta.get('data')}"


CALIBRATORS = {"entropy": "IInt8EntropyCalibrator2", "minmax": "IInt8MinMaxCalibrator"}


def _make_calibrator(trt, batches, cache_file: str, dtypes: dict, method: str | None = None):
    """TensorRT's calibrator for --calib-method (default entropy, as before; percentile has none)."""
    if (method or "entropy") not in CALIBRATORS:
        raise BadInput(f"TensorRT calibrates with {' or '.join(CALIBRATORS)}, not {method!r}")
    base = getattr(trt, CALIBRATORS[method or "entropy"])

    class EntropyCalibrator(base):
        def __init__(self):
            base.__init__(self)
            self._it, self._live = iter(batches), None

        def get_batch_size(self):
            return int(next(iter(batches[0].values())).shape[0])

        def get_batch(self, names):
            b = next(self._it, None)
            if b is None:
                return None
            self._live = {n: b[n].to("cuda", dtypes[n]).contiguous() for n in names}  # kept alive until the next call
            return [int(self._live[n].data_ptr()) for n in names]

        def read_calibration_cache(self):
            return open(cache_file, "rb").read() if os.path.exists(cache_file) else None

        def write_calibration_cache(self, cache):
            with open(cache_file, "wb") as fh:
                fh.write(cache)

    return EntropyCalibrator()


def build_plan(onnx_file: str, out_dir: str, cfg, loaded, timing_cache: str, log=print) -> dict:
    """The whole TensorRT build; returns the manifest (without parity)."""
    trt, torch = _trt(), _cuda()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # implicit in TensorRT 10
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(onnx_file):
        errors = "; ".join(str(parser.get_error(i)).replace("\n", " ") for i in range(parser.num_errors))
        raise EngineBuildError(f"TensorRT cannot parse {onnx_file}: {errors or 'no parser error reported'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mib << 20)
    profile = builder.create_optimization_profile()
    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    shapes = profile_shapes(loaded, cfg)
    for t in inputs:
        profile.set_shape(t.name, *shapes[t.name])
    config.add_optimization_profile(profile)
    calib_note = None
    if cfg.fp16 or cfg.int8:
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 falls back to FP16, not FP32, where a layer cannot quantise
    if cfg.int8:
        config.set_flag(trt.BuilderFlag.INT8)
        batches, calib_note = calibration_batches(loaded, cfg.opt_shape, cfg.calib_samples)
        dtypes = {t.name: _trt_dtype_to_torch(trt, torch, t.dtype) for t in inputs}
        config.int8_calibrator = _make_calibrator(trt, batches, os.path.join(out_dir, "calibration.cache"), dtypes,
                                                  cfg.quant.method)
        config.set_calibration_profile(profile)
    cache = config.create_timing_cache(open(timing_cache, "rb").read() if os.path.exists(timing_cache) else b"")
    config.set_timing_cache(cache, True)  # ignore a cache from another GPU or version rather than fail

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_file} (see the TensorRT log above)")
    plan = bytes(memoryview(plan))
    with open(os.path.join(out_dir, "engine.plan"), "wb") as fh:
        fh.write(plan)
    with open(timing_cache, "wb") as fh:
        fh.write(memoryview(config.get_timing_cache().serialize()))
    shapes = {"min": list(cfg.min_shape), "opt": list(cfg.opt_shape), "max": list(cfg.max_shape),
              "axes": ["batch", "sequence"], "inputs": {n: [list(x) for x in v] for n, v in shapes.items()}}
    return {"precision": _precision(cfg), "engine_file": "engine/engine.plan", "onnx_file": os.path.basename(onnx_file),
            "sha256": hashlib.sha256(plan).hexdigest(), "bytes": len(plan), "shapes": shapes,
            "inputs": {t.name: str(t.dtype) for t in inputs}, "timing_cache": timing_cache,
            "int8_calibration": calib_note, "int8_calibrator": (cfg.quant.method or "entropy") if cfg.int8 else None,
            "providers": ["TensorRT"], **gpu_versions()}


class TrtSession:
    """A deserialized engine and its execution context; inputs and outputs are torch CUDA tensors."""

    def __init__(self, plan_file: str):
        trt, torch = _trt(), _cuda()
        self.trt, self.torch = trt, torch
        self.engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(open(plan_file, "rb").read())
        if self.engine is None:
            model_dir = os.path.dirname(os.path.dirname(plan_file))  # DIR/engine/engine.plan
            raise EngineBuildError(f"TensorRT cannot deserialize {plan_file} (damaged, or built by another TensorRT "
                                   f"version or GPU); rebuild it: optin engine {model_dir} --backend tensorrt")
        self.ctx = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_in = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.inputs = [n for n in names if is_in[n]]
        self.outputs = [n for n in names if not is_in[n]]
        self.dtypes = {n: _trt_dtype_to_torch(trt, torch, self.engine.get_tensor_dtype(n)) for n in names}
        self.stream = torch.cuda.Stream()
        self.providers = ["TensorRT"]
        self._live: dict = {}

    def bind(self, batch: dict) -> None:
        torch = self.torch
        self._live = {n: batch[n].to("cuda", self.dtypes[n]).contiguous() for n in self.inputs}
        for n, t in self._live.items():
            self.ctx.set_input_shape(n, tuple(t.shape))
            self.ctx.set_tensor_address(n, t.data_ptr())
        for n in self.outputs:
            out = torch.empty(tuple(self.ctx.get_tensor_shape(n)), dtype=self.dtypes[n], device="cuda")
            self._live[n] = out
            self.ctx.set_tensor_address(n, out.data_ptr())
        torch.cuda.synchronize()  # the copies ran on torch's stream; the engine runs on its own

    def run(self) -> None:
        if not self.ctx.execute_async_v3(self.stream.cuda_stream):
            raise EngineBuildError("TensorRT execute_async_v3 failed (see the TensorRT log above)")
        self.stream.synchronize()

    def __call__(self, batch: dict) -> dict:
        self.bind(batch)
        self.run()
        return {n: self._live[n].float().cpu().numpy() for n in self.outputs}


@register
class TensorRTBackend:
    name = "tensorrt"
    shape_profile = True   # inputs must stay inside the optimization profile (accuracy batches too)

    def available(self, cfg) -> None:
        if cfg.int8 and (cfg.quant.method or "entropy") not in CALIBRATORS:
            raise BadInput(f"TensorRT calibrates with {' or '.join(CALIBRATORS)}, not {cfg.quant.method!r}")
        _trt()
        _cuda()

    def build(self, onnx_file: str, out_dir: str, cfg, loaded, log=print) -> dict:
        from ..parity import Tolerance, verify

        timing_cache = os.path.join(os.path.dirname(os.path.abspath(onnx_file)), "trt_timing.cache")
        manifest = build_plan(onnx_file, out_dir, cfg, loaded, timing_cache, log=log)
        atol, agree = TOLERANCE[manifest["precision"]]
        atol = atol if cfg.tol is None else cfg.tol
        agree = agree if cfg.min_agreement is None else cfg.min_agreement
        lo, hi = cfg.min_shape, cfg.max_shape
        session = TrtSession(os.path.join(out_dir, "engine.plan"))
        manifest["parity"] = verify(loaded, session, f"TensorRT {manifest['precision']} engine of {onnx_file}",
                                    Tolerance(atol, agree), shape_limits=(lo, hi))
        return manifest

    def open(self, model_dir: str, cfg) -> TrtSession:
        plan = os.path.join(model_dir, "engine", "engine.plan")
        if not os.path.exists(plan):
            raise BadInput(f"{plan} does not exist; run `optin engine {model_dir} --backend tensorrt` first")
        return TrtSession(plan)
