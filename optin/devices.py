"""Where the pruner runs (`--device auto|cpu|cuda`) and in what precision it scores (`--dtype`).

- Device: `auto` is CUDA when torch sees a GPU, else the CPU; `cuda[:N]` must exist (else one
  line, exit 2). Under torchrun every rank takes its LOCAL_RANK GPU (optin.distributed then uses
  NCCL). `None` (the Python API's default) leaves the model where it is. The model and the
  calibration / re-fit batches are moved once; evaluation batches one at a time
  (optin.evaluate), so a large test split never sits on the GPU whole.
- Dtype: float32 by default. bfloat16 / float16 run the *forward passes of scoring and
  evaluation* under torch.autocast: the weights stay float32 (and are saved so), matmuls run in
  the narrow type, and the quantities that are sums of many small terms are computed in float32
  with autocast off (`full_precision`: Gram matrices, log-softmax, KL, the score accumulators).
  BatchNorm re-estimation and the closed-form re-fit always run in float32, their Gram matrices in
  float64 (`gram_device`). float16 is refused where it is not safe (`check_dtype`).
- CUDA out of memory becomes DeviceOutOfMemory, one line naming the flag that lowers the memory
  (`out_of_memory`).
"""
from __future__ import annotations

import functools
import os
import traceback
from contextlib import nullcontext

import torch

from .errors import BadInput, DeviceOutOfMemory

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
CHOICES = ("auto", "cpu", "cuda")


def resolve(spec: str | None, model: torch.nn.Module | None = None) -> torch.device:
    """The device to run on: spec "auto", "cpu", "cuda" or "cuda:N"; None: the model's own device."""
    if spec is None:
        p = next(model.parameters(), None) if model is not None else None
        return p.device if p is not None else torch.device("cpu")
    s = str(spec).strip().lower()
    if s == "auto":
        s = "cuda" if torch.cuda.is_available() else "cpu"
    if s == "cpu":
        return torch.device("cpu")
    kind, _, index = s.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise BadInput(f"unknown --device {spec!r}; choose one of: auto, cpu, cuda (or cuda:N)")
    if not torch.cuda.is_available():
        raise BadInput(f"--device {spec}: no CUDA device visible to torch {torch.__version__} (CUDA build: "
                       f"{torch.version.cuda or 'none'}); use --device cpu, or auto")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # torchrun: one GPU per rank
        if index:
            raise BadInput(f"--device {spec}: under torchrun each rank takes its LOCAL_RANK GPU; give --device cuda")
        index = os.environ.get("LOCAL_RANK", "0")
    n, i = torch.cuda.device_count(), int(index or 0)
    if i >= n:
        raise BadInput(f"--device cuda:{i}: torch sees {n} CUDA device(s) (0..{n - 1}); "
                       + ("launch at most that many ranks per node" if world > 1 else "choose one of them"))
    return torch.device("cuda", i)


def dtype_of(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise BadInput(f"unknown --dtype {name!r}; choose one of: {', '.join(DTYPES)}")
    return DTYPES[name]


def check_dtype(device: torch.device, name: str, uses_gradients: bool = False, what: str = "") -> None:
    """Refuse a scoring dtype the device or the method cannot use safely (one line, exit 2)."""
    dt = dtype_of(name)
    if dt is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise BadInput(f"--dtype bfloat16: {torch.cuda.get_device_name(device)} has no bfloat16 support; "
                       "use --dtype float16 or float32")
    if dt is torch.float16 and uses_gradients:
        # float16's smallest normal number is 6e-5 and nothing scales the loss here: the backward
        # pass through many layers underflows (bfloat16 has float32's range)
        raise BadInput(f"--dtype float16 with {what or 'a gradient-based method'}: its mask gradients would "
                       "underflow in float16; use --dtype bfloat16 (same range as float32) or float32")


def autocast(device: torch.device, name: str = "float32"):
    """The context of scoring and evaluation passes: nothing for float32 (the very same ops as
    without it), torch.autocast to the narrow dtype otherwise."""
    dt = dtype_of(name)
    return nullcontext() if dt is torch.float32 else torch.autocast(device.type, dtype=dt)


def full_precision(x: torch.Tensor):
    """Autocast off for a reduction that must stay float32 (a Gram matrix of normalised rows: its
    entries are sums of hundreds of products; in 16 bits the distances between two of them drown
    in rounding)."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.autocast(x.device.type, enabled=False)
    return nullcontext()


def move(batches: list[dict] | None, device: torch.device) -> list[dict] | None:
    """Batches (dicts of tensors) on `device`; the same list when they are there already."""
    if not batches or all(v.device == device for b in batches for v in b.values()):
        return batches
    return [{k: v.to(device) for k, v in b.items()} for b in batches]


@functools.lru_cache(maxsize=None)
def has_float64(device: torch.device) -> bool:
    """Whether the device computes in float64 (CUDA does, if slowly on consumer GPUs; Apple's
    MPS does not): probed, not assumed."""
    try:
        return bool((torch.ones(2, dtype=torch.float64, device=device) @ torch.ones(2, dtype=torch.float64,
                                                                                  device=device)) == 2)
    except (RuntimeError, TypeError):
        return False


def gram_device(device: torch.device) -> torch.device:
    """Where the re-fit accumulates its float64 Gram matrices: on the model's device when it has
    float64 (one d×d product per batch there beats copying every batch's rows to the host and
    multiplying on a few CPU cores, even at consumer GPUs' 1/32–1/64 float64 rate), else the CPU."""
    return device if has_float64(device) else torch.device("cpu")


def describe(device: torch.device) -> dict:
    """What the report says about the device (of a tensor that was there: checked, not asked)."""
    out = {"type": device.type, "index": device.index}
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out.update(name=p.name, memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                   cuda=torch.version.cuda)
    return out


def model_device(model: torch.nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


# --- CUDA out of memory -------------------------------------------------------------------------
_STEPS = (("optin/reconstruct", "the re-fit"), ("optin/recalibrate", "BatchNorm re-estimation"),
          ("optin/tokens", "token scoring"), ("optin/importance", "scoring"), ("optin/evaluate", "evaluation"),
          ("profiling/", "profiling"))


def _step(exc: BaseException) -> str | None:
    """The pipeline step that ran out of memory: the innermost optin module in the traceback."""
    files = [f.filename.replace("\\", "/") for f in traceback.extract_tb(exc.__traceback__)]
    for f in reversed(files):
        for key, name in _STEPS:
            if key in f:
                return name
    return None


def oom_message(exc: BaseException, fix) -> str:
    """One line: where it ran out, on which device and how full it was, and the flags that help
    (fix(step) → advice)."""
    step = _step(exc)
    fix = fix(step)
    where = ""
    if torch.cuda.is_available():
        i = torch.cuda.current_device()
        free, total = torch.cuda.mem_get_info(i)
        where = f" on cuda:{i} ({torch.cuda.get_device_name(i)}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free)"
    return f"CUDA out of memory{' during ' + step if step else ''}{where}; {fix}"


def out_of_memory(fix):
    """Decorator: torch.OutOfMemoryError in the call becomes DeviceOutOfMemory(one line).
    fix(args, kwargs, step) → the advice for the step that ran out (the flags to lower, with their values)."""
    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except torch.OutOfMemoryError as e:
                msg = oom_message(e, lambda step: fix(args, kwargs, step))
            # raised outside the except clause: the out-of-memory error (and through its traceback
            # the tensors that filled the GPU) is not kept alive as this one's __context__
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            raise DeviceOutOfMemory(msg)
        return wrapper
    return deco
