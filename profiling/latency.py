"""Latency of a deployed model, and its speedup over the dense one, measured honestly.

Runners (ONNX Runtime session, TensorRT execution context, torch eager model) share two calls:
`bind(inputs)` once, `run()` per iteration; `measure()` times one, `compare()` times two
interleaved in one process, alternating which goes first each iteration (A B, B A, …), so
that drift and the neighbours' load on a shared machine hit both alike. Never gate on an
absolute time measured on a shared machine: gate on the ratio.
Inputs are real token ids, every row exactly `seq` long and fully attended.
speedup.measured = median_dense / median_pruned; mac_implied = MACs_dense / MACs_pruned
(profiling.macs, 1 MAC = one multiply-add); flop_efficiency = measured / mac_implied.
An INT8 / FP16 engine is timed against the dense float32 model (`speedup`) and the dense model
built the same way (`same_precision`, profiling.dense), the three interleaved in one loop.
speedup.ci95 is a bootstrap over the interleaved iterations: the spread of the ratio itself.
The torch backend runs where the model was loaded (the CPU, wall-clock timing) unless --device
cuda: then both models sit on the GPU, each iteration is timed by CUDA events around it (GPU
time, not the host's launch overhead), optionally in float16 (--fp16: dense and pruned alike,
so the speedup compares like with like) and replayed from a CUDA graph (--cuda-graphs: captured
once per input shape, after the warm-up).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace

import numpy as np

from optin.errors import BadInput

CV_WARN = 0.1
BACKENDS = ("onnxruntime", "tensorrt", "torch")


@dataclass(frozen=True)
class ProfileConfig:
    backend: str = "onnxruntime"
    batch: int = 8
    seq: int = 64
    iters: int = 200
    warmup: int = 20
    against: str | None = None                 # dense model (zoo name, HF folder) or another model folder
    sweep_batch: tuple[int, ...] = ()
    sweep_seq: tuple[int, ...] = ()
    engine: object = None                      # export.engines.EngineConfig (None: its defaults)
    same_precision: bool = True                # INT8 / FP16: also time the dense model at that precision
    device: str | None = None                  # torch backend: auto, cpu, cuda[:N] (None: where it loads, the CPU)
    fp16: bool = False                         # torch backend on CUDA: both models in float16
    cuda_graphs: bool = False                  # torch backend on CUDA: replay a captured graph per iteration

    def check(self) -> None:
        if self.backend not in BACKENDS:
            raise BadInput(f"unknown backend {self.backend!r}; known: {', '.join(BACKENDS)}")
        if self.batch < 1 or self.seq < 2 or any(b < 1 for b in self.sweep_batch) or any(s < 2 for s in self.sweep_seq):
            raise BadInput("--batch must be >= 1 and --seq >= 2 (also in sweeps)")
        if self.iters < 10 or self.warmup < 0:
            raise BadInput(f"--iters must be >= 10 for percentiles to mean anything, got {self.iters}")
        torch_only = [f for f, on in (("--device", self.device is not None), ("--fp16", self.fp16),
                                      ("--cuda-graphs", self.cuda_graphs)) if on]
        if torch_only and self.backend != "torch":
            raise BadInput(f"{' / '.join(torch_only)} apply to --backend torch; {self.backend} takes its device from "
                           "--provider and its precision from `optin engine --fp16`")

    def torch_device(self):
        """The torch backend's device (None: leave the model where it loads); --fp16 and
        --cuda-graphs only on CUDA (one line, exit 2, otherwise)."""
        from optin.devices import resolve

        if self.backend != "torch" or self.device is None:
            dev = None
        else:
            dev = resolve(self.device)
        if (self.fp16 or self.cuda_graphs) and (dev is None or dev.type != "cuda"):
            flags = " / ".join(f for f, on in (("--fp16", self.fp16), ("--cuda-graphs", self.cuda_graphs)) if on)
            raise BadInput(f"{flags} time the model on a GPU; add --device cuda")
        return dev


# --- runners ---------------------------------------------------------------------------------
class TorchRunner:
    """The eager PyTorch model, for reference timings (CPU, or CUDA when the model is there or
    `device` says so). On CUDA, `timed()` measures one run with CUDA events; fp16 casts the
    model to float16; cuda_graphs captures the forward pass at bind() and replays it."""

    def __init__(self, model, threads: int | None = None, device=None, fp16: bool = False, cuda_graphs: bool = False):
        import torch

        if threads:  # torch's OpenMP pool, like ORT's spinning threads, collapses on a busy shared CPU
            torch.set_num_threads(threads)
        self.torch, self.model = torch, model.eval()
        if device is not None:
            self.model.to(device)
        if fp16:
            self.model.half()
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        if self.device.type == "cuda":  # streams, events and graph replays below use the current device's
            torch.cuda.set_device(self.device)
        if cuda_graphs and self.device.type != "cuda":
            raise BadInput("--cuda-graphs time the model on a GPU; add --device cuda")
        self.cuda_graphs = cuda_graphs
        self.providers = [f"torch-{self.device.type}"]
        self._inputs = self._graph = None

    def bind(self, batch: dict) -> None:
        # float inputs (pixel values) in the model's dtype; token ids stay integers
        self._inputs = {k: v.to(self.device, self.dtype if v.is_floating_point() else v.dtype) for k, v in batch.items()}
        if self.cuda_graphs:
            self._graph = None  # a new shape: the old graph (and its memory pool) goes
            self._graph = self._capture()

    def _capture(self):
        """The forward pass captured on static inputs (self._inputs, which replays read). CUDA
        requires a few runs on a side stream first (lazy initialisation, cuBLAS workspaces)."""
        torch = self.torch
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.inference_mode():
                with torch.cuda.stream(side):
                    for _ in range(3):
                        self.model(**self._inputs)
                torch.cuda.current_stream(self.device).wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self._out = self.model(**self._inputs)
        except RuntimeError as e:  # an op that syncs with the host or allocates outside the graph's pool
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise BadInput(f"--cuda-graphs: {type(self.model).__name__} could not be captured in a CUDA graph "
                           f"({first}); drop --cuda-graphs") from None
        torch.cuda.synchronize(self.device)
        return graph

    def _launch(self) -> None:
        if self._graph is not None:
            self._graph.replay()
            return
        with self.torch.inference_mode():
            self.model(**self._inputs)

    def run(self) -> None:
        self._launch()
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def timed(self) -> float | None:
        """Seconds of one run, by CUDA events on the GPU's stream (None on the CPU: wall clock)."""
        if self.device.type != "cuda":
            return None
        cuda = self.torch.cuda
        start, end = cuda.Event(enable_timing=True), cuda.Event(enable_timing=True)
        start.record()
        self._launch()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3


def open_runner(backend: str, model_dir: str, engine_cfg, loaded=None, log=print, cfg: ProfileConfig | None = None):
    """A runner for the model in model_dir; TensorRT and ORT come from export.engines (imported there).
    cfg: the torch backend's device, fp16 and CUDA graphs (None: eager, where the model loads)."""
    if backend == "torch":
        from export.samples import load

        dev = cfg.torch_device() if cfg is not None else None
        return TorchRunner((loaded or load(model_dir, log=log)).model, engine_cfg.threads, dev,
                           bool(cfg and cfg.fp16), bool(cfg and cfg.cuda_graphs))
    from export.engines import get_backend
    from export.onnx import ensure_onnx

    if backend == "onnxruntime":
        ensure_onnx(model_dir, engine_cfg.onnx_file, log=log)
    return get_backend(backend).open(model_dir, engine_cfg)


# --- timing ----------------------------------------------------------------------------------
def stats(times_s, batch: int) -> dict:
    t = np.asarray(times_s) * 1e3
    med = float(np.median(t))
    cv = float(np.std(t) / np.mean(t))
    return {"latency_ms": {"median": med, "p90": float(np.percentile(t, 90)), "p99": float(np.percentile(t, 99)),
                           "mean": float(np.mean(t)), "min": float(np.min(t))},
            "throughput": batch / (med / 1e3), "cv": cv, "unstable": cv > CV_WARN, "iters": len(t)}


def _timed(runner) -> float:
    """One run's seconds: the runner's own timer where it has one (CUDA events), else wall clock."""
    own = getattr(runner, "timed", None)
    t = own() if own is not None else None
    if t is not None:
        return t
    t0 = time.perf_counter()
    runner.run()
    return time.perf_counter() - t0


def measure(runner, inputs: dict, iters: int = 200, warmup: int = 20) -> dict:
    """Bind once, warm up, time `iters` runs; stats in ms, throughput in examples/s."""
    runner.bind(inputs)
    for _ in range(warmup):
        runner.run()
    times = [_timed(runner) for _ in range(iters)]
    return stats(times, _batch_size(inputs)) | {"times_ms": [x * 1e3 for x in times]}


def _batch_size(inputs: dict) -> int:
    return len(next(iter(inputs.values())))


def compare(a, b, inputs: dict, iters: int = 200, warmup: int = 20) -> dict:
    """Time a (dense) and b (pruned) interleaved; speedup = median_a / median_b, with ci95."""
    sa, sb = compare_all([a, b], inputs, iters, warmup)
    return {"a": sa, "b": sb, "speedup": sa["latency_ms"]["median"] / sb["latency_ms"]["median"],
            "speedup_ci95": ratio_ci(sa["times_ms"], sb["times_ms"])}


def compare_all(runners, inputs: dict, iters: int = 200, warmup: int = 20) -> list[dict]:
    """Time several runners interleaved: every iteration runs each once, in an order that cycles
    through all permutations, so each runner takes each position equally often (two runners:
    A B, B A, …). Returns each runner's stats, times_ms included."""
    import itertools

    for r in runners:
        r.bind(inputs)
    for _ in range(warmup):
        for r in runners:
            r.run()
    orders = list(itertools.permutations(range(len(runners))))
    times = [[] for _ in runners]
    for i in range(iters):
        for j in orders[i % len(orders)]:
            times[j].append(_timed(runners[j]))
    n = _batch_size(inputs)
    return [stats(t, n) | {"times_ms": [x * 1e3 for x in t]} for t in times]


def ratio_ci(a_ms, b_ms, n_boot: int = 400, seed: int = 0) -> list[float]:
    """95% bootstrap interval of median(a) / median(b), resampling interleaved iterations as
    pairs (each pair ran back to back, so the machine's drift stays paired)."""
    a, b = np.asarray(a_ms, dtype=float), np.asarray(b_ms, dtype=float)
    idx = np.random.default_rng(seed).integers(0, len(a), (n_boot, len(a)))
    r = np.median(a[idx], axis=1) / np.median(b[idx], axis=1)
    return [float(np.percentile(r, 2.5)), float(np.percentile(r, 97.5))]


# --- MACs --------------------------------------------------------------------------------------
def model_macs(model_dir: str, seq: int) -> tuple[int, str]:
    """MACs per example at seq tokens: report.json's count when it was made at this length,
    else the analytic count from config.json and spec.json: the family adapter's own cost model
    (Adapter.spec_macs; profiling.macs.dense_macs for a dense folder), never the pruner's."""
    import torch
    from transformers import AutoConfig

    from optin.adapters import ADAPTERS, adapter_for
    from optin.io import read_json, read_spec

    from .macs import dense_macs

    rep = read_json(os.path.join(model_dir, "report.json"), {}) or {}
    macs = rep.get("macs") or {}
    if macs.get("seq_len") == seq and "pruned" in macs:
        return int(macs["pruned"]), "report.json"
    src = model_dir
    exp = read_json(os.path.join(model_dir, "export.json"))
    if exp and not os.path.exists(os.path.join(model_dir, "config.json")):
        src = exp["source"]
    elif not os.path.isdir(model_dir):
        from optin.zoo import resolve_model

        src = resolve_model(model_dir)
    with torch.device("meta"):  # shapes only: no weights are allocated
        config = AutoConfig.from_pretrained(src)
        adapter = adapter_for(ADAPTERS[config.model_type].from_config(config))
    n = adapter.seq_len(seq)
    spec_file = os.path.join(model_dir, "spec.json")
    if os.path.exists(spec_file):
        return adapter.spec_macs(read_spec(spec_file), n), "analytic (spec.json)"
    return dense_macs(adapter, n), "analytic (dense)"


# --- the `optin profile` command -----------------------------------------------------------------
def _measure_point(target, dense, loaded, batch, seq, cfg, data) -> tuple[dict, str]:
    from export.samples import fixed_inputs

    inputs, source = fixed_inputs(loaded, batch, seq, data)
    if dense is None:
        return {"b": measure(target, inputs, cfg.iters, cfg.warmup)}, source
    return compare(dense, target, inputs, cfg.iters, cfg.warmup), source


def _sweep(target, dense, loaded, cfg, data) -> list[dict]:
    out = []
    for b, s in [(x, cfg.seq) for x in cfg.sweep_batch] + [(cfg.batch, x) for x in cfg.sweep_seq]:
        r, _ = _measure_point(target, dense, loaded, b, s, cfg, data)
        p = {"batch": b, "seq": s, "median_ms": r["b"]["latency_ms"]["median"], "cv": r["b"]["cv"],
             "throughput": r["b"]["throughput"]}
        if dense is not None:
            p |= {"dense_median_ms": r["a"]["latency_ms"]["median"], "speedup": r["speedup"]}
        out.append(p)
    return out


@dataclass
class Pair:
    """What a profile measures: the target's runner, the dense one's (or None), and their inputs'
    source; for an INT8 / FP16 target also the dense model at that precision (profiling.dense)."""

    cfg: ProfileConfig
    loaded: object          # export.samples.Loaded of the target (tokenizer, data, config)
    target: object
    dense: object | None
    dense_dir: str | None
    same: object | None = None
    same_dir: str | None = None

    @property
    def data(self):
        return self.loaded.meta.get("data")


def open_pair(model_dir: str, cfg: ProfileConfig, log=print) -> Pair:
    """Runners for DIR and, with cfg.against, for the dense model (exported into DIR/dense/ if needed)."""
    from export.samples import load
    from export.taskdata import split_config

    from .dense import dense_dir as _dense_dir, engine_cfg, same_precision_dir

    cfg.check()
    cfg.torch_device()  # a missing GPU or a flag without one fails before anything is loaded
    if not os.path.isdir(model_dir):
        raise BadInput(f"{model_dir!r} is not a model folder; give the folder written by `optin prune`")
    from optin.adapters import adapter_for

    cfg = replace(cfg, engine=engine_cfg(model_dir, cfg))
    loaded = load(model_dir, log=log)
    # an image model's token count is fixed by its resolution: report that, not --seq
    cfg = replace(cfg, seq=adapter_for(loaded.model).seq_len(cfg.seq))
    target = open_runner(cfg.backend, model_dir, cfg.engine, loaded, log=log, cfg=cfg)
    if not cfg.against:
        return Pair(cfg, loaded, target, None, None)
    ddir = _dense_dir(model_dir, cfg.against, cfg, loaded.meta.get("data"), split_config(loaded), log)
    fp32 = replace(cfg, engine=replace(cfg.engine, fp16=False, int8=False))
    # a dense folder given as is keeps its own TensorRT engine; a float32 ORT one runs model.onnx
    dense_cfg = engine_cfg(ddir, fp32, follow_built=cfg.backend == "tensorrt")
    # torch: the dense model on the same device, in the same precision (cfg, not fp32)
    dense = open_runner(cfg.backend, ddir, dense_cfg if cfg.backend == "tensorrt" else fp32.engine, log=log, cfg=cfg)
    sdir = same_precision_dir(model_dir, ddir, cfg, log) if cfg.same_precision else None
    same = open_runner(cfg.backend, sdir, cfg.engine, log=log) if sdir else None
    return Pair(cfg, loaded, target, dense, ddir, same, sdir)


def _speedup(dense_stats, target_stats, implied) -> dict:
    m = dense_stats["latency_ms"]["median"] / target_stats["latency_ms"]["median"]
    return {"measured": m, "mac_implied": implied, "flop_efficiency": m / implied, "interleaved": True,
            "ci95": ratio_ci(dense_stats["times_ms"], target_stats["times_ms"])}


def profile(model_dir: str, cfg: ProfileConfig = ProfileConfig(), log=print) -> dict:
    """Measure DIR (and the dense model with `against`), write DIR/profile.json and profile.png."""
    from export.samples import fixed_inputs
    from optin.io import write_json
    from optin.report import versions

    pair = open_pair(model_dir, cfg, log=log)
    cfg, loaded, target, dense, dense_dir, data = pair.cfg, pair.loaded, pair.target, pair.dense, pair.dense_dir, pair.data
    inputs, source = fixed_inputs(loaded, cfg.batch, cfg.seq, data)
    runners = [r for r in (target, dense, pair.same) if r is not None]
    timed = compare_all(runners, inputs, cfg.iters, cfg.warmup)
    b = timed[0]
    main = {"b": b} | ({"a": timed[1]} if dense is not None else {})
    prec = "fp16" if cfg.backend == "torch" and cfg.fp16 else cfg.engine.precision
    report = {"command": "profile", "backend": cfg.backend, "batch": cfg.batch, "seq": cfg.seq,
              "precision": prec, "latency_ms": b["latency_ms"], "throughput": b["throughput"],
              "cv": b["cv"], "iters": cfg.iters, "warmup": cfg.warmup, "inputs": source, "providers": target.providers,
              "session": _session_info(cfg, target), "warnings": []}
    if b["unstable"]:
        report["warnings"].append(f"pruned latency cv {b['cv']:.2f} > {CV_WARN}: noisy machine, widen --iters")
    if dense is not None:
        macs_d, src_d = model_macs(dense_dir, cfg.seq)
        macs_p, src_p = model_macs(model_dir, cfg.seq)
        implied = macs_d / macs_p
        a = timed[1]
        # torch --fp16 runs the dense model in float16 too; every other backend's reference is float32
        ref = prec if cfg.backend == "torch" else "fp32"
        report["dense"] = {"model": cfg.against, "dir": _inside(dense_dir, model_dir), "precision": ref,
                           "latency_ms": a["latency_ms"], "throughput": a["throughput"], "cv": a["cv"],
                           "providers": dense.providers}
        report["speedup"] = _speedup(a, b, implied) | {"reference": "dense float32" if ref == "fp32" else f"dense {ref}"}
        report["macs"] = {"dense": macs_d, "pruned": macs_p, "seq_len": cfg.seq, "source": [src_d, src_p],
                          "unit": "MACs per example (1 MAC = 1 multiply-add = 2 FLOPs)"}
        if a["unstable"]:
            report["warnings"].append(f"dense latency cv {a['cv']:.2f} > {CV_WARN}: noisy machine")
    if pair.same is not None:
        s = timed[2]
        report["same_precision"] = {"precision": cfg.engine.precision, "dir": _inside(pair.same_dir, model_dir),
                                    "latency_ms": s["latency_ms"], "cv": s["cv"], "providers": pair.same.providers,
                                    "speedup": _speedup(s, b, implied) | {"reference": f"dense {cfg.engine.precision}"},
                                    "dense_speedup": _speedup(a, s, 1.0)["measured"]}
    report["sweep"] = _sweep(target, dense, loaded, cfg, data)
    report["versions"] = versions() | (_gpu_versions() if cfg.backend == "tensorrt" else {})
    _plot(report, main, os.path.join(model_dir, "profile.png"))
    write_json(os.path.join(model_dir, "profile.json"), report)
    log(summary(report))
    return report


def _inside(path: str, root: str) -> str:
    """path relative to root when it lies inside it: the folder may be renamed after profiling."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return path if rel.startswith("..") else rel


def _session_info(cfg: ProfileConfig, runner=None) -> dict:
    e = cfg.engine
    if cfg.backend == "onnxruntime":
        return {"provider": e.provider, "graph_optimization_level": e.level, "intra_op_threads": e.threads,
                "allow_spinning": e.spin, "onnx_file": e.onnx_file, "precision": e.precision,
                "engine_file": None if e.precision == "fp32" else f"engine/model.{e.precision}.onnx"}
    if cfg.backend == "tensorrt":
        return {"precision": "int8" if e.int8 else "fp16" if e.fp16 else "fp32",
                "min_shape": list(e.min_shape), "opt_shape": list(e.opt_shape), "max_shape": list(e.max_shape)}
    out = {"torch_threads": e.threads}
    if cfg.device is not None:  # --device given: where it ran (read off the weights) and how it was timed
        from optin.devices import describe

        out.update(device=describe(runner.device), fp16=cfg.fp16, cuda_graphs=cfg.cuda_graphs,
                   timer="cuda events" if runner.device.type == "cuda" else "perf_counter")
    return out


def _gpu_versions() -> dict:
    from export.engines.trt import gpu_versions

    return gpu_versions()


def _plot(report: dict, main: dict, path: str) -> None:
    """Per-iteration latency at the main shape, then median latency over each sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    here = {"batch": report["batch"], "seq": report["seq"], "median_ms": report["latency_ms"]["median"]}
    if "dense" in report:
        here["dense_median_ms"] = report["dense"]["latency_ms"]["median"]
    sweeps = []
    for key, fixed in (("batch", "seq"), ("seq", "batch")):
        pts = [p for p in report["sweep"] if p[fixed] == report[fixed] and p[key] != report[key]]
        if pts:
            sweeps.append((key, fixed, sorted(pts + [here], key=lambda p: p[key])))
    fig, axes = plt.subplots(1, 1 + len(sweeps), figsize=(5.5 * (1 + len(sweeps)), 3.6), squeeze=False)
    ax = axes[0][0]
    series = [("pruned", main["b"]["times_ms"])] + ([("dense", main["a"]["times_ms"])] if "a" in main else [])
    for name, t in series:
        ax.plot(t, lw=0.7, label=f"{name}: median {np.median(t):.2f} ms")
    title = f"{report['backend']} batch {report['batch']} × seq {report['seq']}"
    if "speedup" in report:
        s = report["speedup"]
        title += f": {s['measured']:.2f}x measured, {s['mac_implied']:.2f}x MAC-implied"
    ax.set(xlabel="iteration (A/B interleaved)" if "a" in main else "iteration", ylabel="latency (ms)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    for ax, (key, fixed, pts) in zip(axes[0][1:], sweeps):
        x = [p[key] for p in pts]
        ax.plot(x, [p["median_ms"] for p in pts], "o-", label="pruned")
        if "dense_median_ms" in here:
            ax.plot(x, [p["dense_median_ms"] for p in pts], "s--", label="dense")
            for p in pts:
                ax.annotate(f"{p['dense_median_ms'] / p['median_ms']:.2f}x", (p[key], p["median_ms"]),
                            textcoords="offset points", xytext=(0, -12), ha="center", fontsize=7)
        ax.set(xscale="log", yscale="log", xlabel=key, ylabel="median latency (ms)")
        ax.set_xticks(x, [str(v) for v in x])
        ax.minorticks_off()
        ax.set_title(f"{key} sweep ({fixed} {report[fixed]})", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(r: dict) -> str:
    lat = r["latency_ms"]
    s = (f"optin profile: {r['backend']} ({', '.join(r['providers'][:1])}) b{r['batch']}×s{r['seq']}: "
         f"median {lat['median']:.2f} ms, p90 {lat['p90']:.2f}, p99 {lat['p99']:.2f}, {r['throughput']:.0f} ex/s, "
         f"cv {r['cv']:.2f}")
    if "speedup" in r:
        sp = r["speedup"]
        s += (f"; vs dense {r['dense']['latency_ms']['median']:.2f} ms: speedup {sp['measured']:.2f}x "
              f"(MAC-implied {sp['mac_implied']:.2f}x, efficiency {sp['flop_efficiency']:.2f})")
    if "same_precision" in r:
        sp = r["same_precision"]
        s += f"; vs dense {sp['precision']} {sp['latency_ms']['median']:.2f} ms: {sp['speedup']['measured']:.2f}x"
    if r["warnings"]:
        s += f"; WARNING: {r['warnings'][0]}"
    return s
