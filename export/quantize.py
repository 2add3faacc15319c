"""INT8 graphs with ONNX Runtime's quantisation tools (onnxruntime.quantization).

dynamic: `quantize_dynamic`: MatMul / Gemm weights to QInt8 ahead of time, activations
  quantised per batch at run time; no calibration data is needed.
static:  `quantize_static`, QDQ format: activation ranges calibrated (MinMax, Entropy or
  Percentile) on the calibration split of the data the model was pruned on (export.taskdata),
  fed through a CalibrationDataReader; QUInt8 activations and QInt8 weights on CPUs (ORT's own
  advice for x86: reduce_range only without VNNI), symmetric QInt8 for the TensorRT provider.
  Calibration runs once; every variant below reuses its ranges (ORT's calibration cache).

Weight scales are per output channel in dynamic mode by default: on minilm-rt pruned to 0.35 of
MACs, fully quantised, they cut the logits' relative squared error against float32 from 0.021 to
0.004 and kept float32's dev accuracy (86.25% against 85.20% per-tensor, 86.35% float32; 2,000
train snippets), at the same speed (bench/int8_exclusion.py, bench/README.md). Static mode keeps
per-tensor scales (ORT's advice for CPU throughput; not re-measured here).

Nodes left in float where they cost accuracy, chosen on calibration data only, never on test:
the examples after the ones used for the ranges are held out as a check set. The fully quantised
graph is compared with float32 on it. It is accepted when argmax agreement is at least
`min_agreement` and, when the engine's parity tolerance (export.parity.Tolerance) has a max-abs
bound (INT8's default has none; `--tol` sets one), its largest logit difference is within it.
Otherwise each quantisable node's sensitivity is measured by quantising it alone (relative squared
logit error against float32), and the most sensitive k = 1, 2, 4, … nodes are left in float until
a graph is accepted or `max_excluded` of the nodes are float; an accepted k is then bisected down
against the last k that was not (every node left in float costs speed). The best step is kept
(accepted with the fewest nodes in float, else within the bound, then agreement). Every step is
returned for engine.json.

The target, 0.97, was chosen on dev data (bench/int8_exclusion.py: 2,000 train snippets / images,
minilm-rt dense and at 0.5 / 0.35 / 0.25 of MACs, vit-fmnist dense and at 0.35): against 0.99 it
gave up 0.14 points of dev accuracy on average and ran the INT8 graph 11% faster on average (up
to 24%: 0.99 left 2–6 of minilm-rt's 38 nodes in float, the wide early FFN projections).
Which examples calibrate depends on `seed` only (a seeded order), so a build is reproducible.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from optin.errors import BadData, BadInput

MODES = ("dynamic", "static")
METHODS = ("minmax", "entropy", "percentile")
# Conv only in static mode: dynamic Conv becomes ConvInteger, which ran resnet-fmnist at 0.15x of
# float32 (ORT CPU, 2 threads, batch 8); static QDQ Conv becomes QLinearConv (1.33x).
DEFAULT_OPS = {"dynamic": ("MatMul", "Gemm"), "static": ("MatMul", "Gemm", "Conv")}
CHECK_SAMPLES = 256   # held-out calibration samples for agreement and sensitivity
MIN_CHECK = 32        # fewer held out than this: check on the calibration samples themselves (said)


@dataclass(frozen=True)
class QuantConfig:
    mode: str = "dynamic"             # dynamic | static
    method: str | None = None         # calibration: minmax | entropy | percentile (None: the backend's
                                      # default, MinMax for ONNX Runtime, entropy for TensorRT)
    per_channel: bool | None = None   # None: per-channel weight scales, except static with Conv or TensorRT
    seed: int = 0                     # order of the calibration examples: which ones calibrate
    exclude: str = "auto"             # auto (sensitivity on calibration data) | none | NODE,NODE,...
    min_agreement: float = 0.97       # auto: argmax agreement with float32 on the check set (module doc)
    max_excluded: float = 0.25        # auto: at most this part of the quantisable nodes left in float
    ops: tuple[str, ...] | None = None  # op types to quantise (None: DEFAULT_OPS of the mode)

    def check(self) -> None:
        if self.mode not in MODES:
            raise BadInput(f"unknown --int8-mode {self.mode!r}; known: {', '.join(MODES)}")
        if self.method is not None and self.method not in METHODS:
            raise BadInput(f"unknown --calib-method {self.method!r}; known: {', '.join(METHODS)}")
        if not 0 < self.min_agreement <= 1 or not 0 <= self.max_excluded <= 1:
            raise BadInput("--int8-min-agreement must be in (0, 1] and the excluded share in [0, 1]")

    @property
    def op_types(self) -> tuple[str, ...]:
        return tuple(self.ops or DEFAULT_OPS[self.mode])


@contextlib.contextmanager
def _quiet():
    """ORT's quantiser logs advice through the root logger on every call; one build, one summary."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def has_vnni() -> bool:
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def quantizable_nodes(model, op_types) -> list[str]:
    """Nodes the quantiser will touch: the op types asked for, with a constant weight (MatMul's
    B, Gemm's B, Conv's W; activation x activation MatMuls stay float, MatMulConstBOnly)."""
    consts = {i.name for i in model.graph.initializer} | {o for n in model.graph.node if n.op_type == "Constant"
                                                          for o in n.output}
    return [n.name for n in model.graph.node if n.op_type in op_types and len(n.input) > 1 and n.input[1] in consts]


class _Reader:
    """CalibrationDataReader over prepared numpy feeds (a plain class: ORT only calls get_next)."""

    def __init__(self, feeds):
        self.feeds, self._it = feeds, iter(feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self.feeds)

    def __len__(self):
        return len(self.feeds)


def _session(path: str, threads: int | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _logits(path: str, feeds, threads) -> np.ndarray:
    s = _session(path, threads)
    return np.concatenate([s.run(None, f)[0] for f in feeds])


def _score(ref: np.ndarray, got: np.ndarray) -> dict:
    # classes are axis 1 of [B, C] and of a segmenter's [B, C, H, W] (agreement per pixel there)
    return {"agreement": float((ref.argmax(1) == got.argmax(1)).mean()),
            "rel_sq_error": float(((got - ref) ** 2).sum() / max(float((ref ** 2).sum()), 1e-12)),
            "max_abs_diff": float(np.abs(got - ref).max())}


class _Quantizer:
    """One model, one configuration; `run(exclude, only)` writes a quantised variant."""

    def __init__(self, onnx_file, qcfg: QuantConfig, calib_feeds, work: str, provider: str):
        from onnxruntime.quantization import CalibrationMethod, QuantType

        self.src, self.q, self.work, self.n = onnx_file, qcfg, work, 0
        self.reduce_range = not has_vnni()
        trt = provider == "tensorrt"   # ORT: symmetric signed activations for GPU / TensorRT
        self.activation = QuantType.QInt8 if trt else QuantType.QUInt8
        self.extra = {"MatMulConstBOnly": True, "ActivationSymmetric": trt}
        self.method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                       "percentile": CalibrationMethod.Percentile}[qcfg.method or "minmax"]
        self.reader = _Reader(calib_feeds) if calib_feeds else None
        self.cache = os.path.join(work, "calibration.json")
        self.float_always = []
        conv = False
        if qcfg.mode == "static":
            import onnx

            # QDQ ignores MatMulConstBOnly: the attention products (activation x activation) are
            # left out by name, and MatMul / Gemm outputs are not re-quantised (the bias Add and
            # softmax that follow stay float). Measured on vit-fmnist, ORT CPU 2 threads: as fast
            # as quantising everything (1.33x over float32), while excluding the products alone,
            # with re-quantised outputs, fell to 1.12x.
            model = onnx.load(onnx_file, load_external_data=False)
            weighted = set(quantizable_nodes(model, ("MatMul",)))
            self.float_always = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in weighted]
            self.extra["OpTypesToExcludeOutputQuantization"] = ["MatMul", "Gemm"]
            conv = any(n.op_type == "Conv" for n in model.graph.node)
        # Per-channel weight scales by default. Dynamic: a fifth of per-tensor's logit error, same
        # speed. Static, chosen on dev (bench/int8_exclusion.py --mode static): minilm-rt dense /
        # 0.3 / 0.5 / 0.7 lost 0.10 / 0.35 / -0.10 / 0.35 points per channel against 0.65 / 0.50 /
        # 0.50 / 0.40 per tensor, with fewer nodes left in float (so faster); but per tensor on a
        # graph with Conv (resnet-fmnist's per-channel QLinearConv ran slower at 7 of 8 points at
        # equal accuracy, bench/quant.py) and for the TensorRT provider (per-channel QDQ MatMul
        # there is unmeasured).
        static_per_tensor = qcfg.mode == "static" and (conv or trt)
        self.per_channel = not static_per_tensor if qcfg.per_channel is None else qcfg.per_channel

    def settings(self) -> dict:
        s = {"mode": self.q.mode, "op_types": list(self.q.op_types), "weight_type": "QInt8",
             "per_channel": self.per_channel, "reduce_range": self.reduce_range,
             "reduce_range_why": "CPU without VNNI" if self.reduce_range else "CPU has VNNI",
             "matmul_const_b_only": True}
        if self.q.mode == "static":
            s |= {"format": "QDQ", "calibration_method": self.q.method or "minmax", "activation_type": self.activation.name,
                  "activation_symmetric": self.extra["ActivationSymmetric"], "float_matmuls": len(self.float_always),
                  "output_quantization": "off for MatMul/Gemm"}
        return s

    def run(self, exclude=(), only=None) -> str:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

        self.n += 1
        out = os.path.join(self.work, f"variant{self.n}.onnx")
        kw = dict(op_types_to_quantize=list(self.q.op_types), per_channel=self.per_channel,
                  reduce_range=self.reduce_range, weight_type=QuantType.QInt8,
                  nodes_to_exclude=list(exclude) + self.float_always,
                  nodes_to_quantize=list(only) if only else None, extra_options=dict(self.extra))
        with _quiet():
            if self.q.mode == "dynamic":
                quantize_dynamic(self.src, out, **kw)
            else:
                if self.reader is not None:
                    self.reader.rewind()
                quantize_static(self.src, out, self.reader, quant_format=QuantFormat.QDQ,
                                activation_type=self.activation, calibrate_method=self.method,
                                calibration_cache_path=self.cache, **kw)
        return out


def _examples(loaded, qcfg: QuantConfig, calib_samples: int):
    """(range examples, check examples, note): a seeded order of the calibration split, the first
    calib_samples for the ranges, up to CHECK_SAMPLES after them held out for the check."""
    from .taskdata import seeded, splits

    sp = splits(loaded)
    ex = seeded(sp.calib, qcfg.seed)
    if not ex or loaded.tokenizer is None:
        return [], [], f"no calibration data ({sp.note if not ex else 'no processor in the folder'})"
    rng, held = ex[:calib_samples], ex[calib_samples:calib_samples + CHECK_SAMPLES]
    if len(held) >= MIN_CHECK:
        return rng, held, (f"{len(rng)} calibration examples of {sp.note} for ranges (seed {qcfg.seed}); "
                           f"{len(held)} held-out calibration examples for the check")
    return rng, rng, (f"{len(rng)} calibration examples of {sp.note} (seed {qcfg.seed}); the calibration split is "
                      f"too small to hold {MIN_CHECK} out, so the check reuses them")


def quantize_int8(onnx_file: str, out_file: str, qcfg: QuantConfig, loaded, calib_samples: int = 256,
                  threads: int | None = None, provider: str = "cpu", log=print, tol=None) -> dict:
    """Write the INT8 graph to out_file (calibration.json beside it for static); returns what
    engine.json records: settings, calibration source, every exclusion step, the nodes left in float.
    tol: the engine's parity Tolerance; its max-abs bound is part of accepting a graph (module doc)."""
    import onnx

    from .taskdata import batches

    qcfg.check()
    rng_ex, check_ex, note = _examples(loaded, qcfg, calib_samples)
    if qcfg.mode == "static" and not rng_ex:
        raise BadData(f"static INT8 calibrates on the calibration split of the data the model was pruned on: {note}; "
                      "use --int8-mode dynamic, or prune with --data")
    names = loaded.input_names

    def feeds(ex, fixed=False):
        bs = batches(loaded, ex, 8, labels=False)
        if fixed and bs:  # histogram calibrators (entropy, percentile) stack batches: one shape for all
            from .samples import _pad_to

            longest = max(b[names[0]].shape[-1] for b in bs) if "input_ids" in names else 0
            pad = getattr(loaded.tokenizer, "pad_token_id", None) or 0
            bs = [_pad_to(b, longest, pad) for b in bs if len(b[names[0]]) == len(bs[0][names[0]])]
        return [{k: b[k].numpy() for k in names} for b in bs]

    candidates = quantizable_nodes(onnx.load(onnx_file, load_external_data=False), qcfg.op_types)
    if not candidates:
        raise BadInput(f"{onnx_file} has no {'/'.join(qcfg.op_types)} node with constant weights to quantise")
    with tempfile.TemporaryDirectory(prefix="optin-int8-") as work:
        qz = _Quantizer(onnx_file, qcfg, feeds(rng_ex, fixed=True) if qcfg.mode == "static" else None, work, provider)
        info = {**qz.settings(), "calibration": note, "seed": qcfg.seed, "quantizable_nodes": len(candidates),
                "exclude": qcfg.exclude, "steps": []}
        check = feeds(check_ex) if check_ex else []
        ref = _logits(onnx_file, check, threads) if check else None
        bounded = tol is not None and tol.atol is not None and ref is not None
        limit = tol.bound(float(np.abs(ref).max())) if bounded else None
        if limit is not None:
            info["max_abs_limit"] = limit
        accept = _Acceptance(qcfg.min_agreement, limit)

        def step(exclude, what):
            path = qz.run(exclude)
            row = {"what": what, "excluded": list(exclude)}
            if ref is not None:
                row |= _score(ref, _logits(path, check, threads))
            info["steps"].append(row)
            return path, row

        if qcfg.exclude not in ("auto", "none"):
            unknown = sorted(set(qcfg.exclude.split(",")) - set(candidates))
            if unknown:
                raise BadInput(f"--int8-exclude names nodes that are not quantisable here: {', '.join(unknown[:5])}")
            best = step(qcfg.exclude.split(","), "excluded as given")
        else:
            best = step([], "all quantisable nodes")
            if qcfg.exclude == "auto" and ref is None:
                info["exclusion_note"] = "no calibration data: nothing left in float by sensitivity"
            elif qcfg.exclude == "auto" and not accept.ok(best[1]):
                best = _exclude_by_sensitivity(qz, candidates, ref, check, threads, qcfg, info, step, best, accept)
            elif qcfg.exclude == "auto":
                info["exclusion_note"] = f"fully quantised: {accept.describe(best[1])}; nothing left in float"
        path, row = best
        os.replace(path, out_file)
        if qcfg.mode == "static" and os.path.exists(qz.cache):
            os.replace(qz.cache, os.path.join(os.path.dirname(out_file), "calibration.json"))
    info["excluded_nodes"] = row["excluded"]
    info["check"] = {k: row[k] for k in ("agreement", "rel_sq_error", "max_abs_diff") if k in row}
    info["bytes"] = {"float32": os.path.getsize(onnx_file), "int8": os.path.getsize(out_file)}
    log(f"optin engine: INT8 {qcfg.mode}: {len(candidates) - len(row['excluded'])}/{len(candidates)} nodes quantised"
        + (f", agreement with float32 {row['agreement']:.3f} on calibration data" if "agreement" in row else "")
        + f"; {info['bytes']['float32'] / 1e6:.1f} -> {info['bytes']['int8'] / 1e6:.1f} MB")
    return info


class _Acceptance:
    """When a step's graph is good enough (module doc), and which of two steps is better."""

    def __init__(self, min_agreement: float, limit: float | None):
        self.min_agreement, self.limit = min_agreement, limit

    def within(self, row) -> bool:
        return self.limit is None or row["max_abs_diff"] <= self.limit

    def ok(self, row) -> bool:
        return row["agreement"] >= self.min_agreement and self.within(row)

    def key(self, row):
        # outside the bound fails the engine's parity outright; agreement below target only costs accuracy
        return self.ok(row), self.within(row), row["agreement"], -row["max_abs_diff"]

    def describe(self, row) -> str:
        s = f"agreement {row['agreement']:.3f} (target {self.min_agreement})"
        if self.limit is not None:
            s += f", max abs diff {row['max_abs_diff']:.3f} (bound {self.limit:.3f})"
        return s


def _exclude_by_sensitivity(qz, candidates, ref, check, threads, qcfg, info, step, best, accept):
    """Rank nodes by the error of quantising each alone; leave the worst k = 1, 2, 4, … in float."""
    sens = {}
    for node in candidates:
        sens[node] = _score(ref, _logits(qz.run(only=[node]), check, threads))["rel_sq_error"]
    ranked = sorted(candidates, key=lambda n: (-sens[n], n))  # name breaks ties: deterministic
    info["sensitivity"] = {n: sens[n] for n in ranked}
    cap = int(qcfg.max_excluded * len(candidates))
    k, failed = 1, 0   # failed: the most nodes in float known not to be accepted
    while k <= cap:
        cand = step(ranked[:k], f"{k} most sensitive left in float")
        if accept.key(cand[1]) > accept.key(best[1]):
            best = cand
        if accept.ok(cand[1]):
            break
        failed = k
        k = k * 2 if k * 2 <= cap or k == cap else cap
    while accept.ok(best[1]) and len(best[1]["excluded"]) - failed > 1:
        mid = (failed + len(best[1]["excluded"])) // 2
        cand = step(ranked[:mid], f"{mid} most sensitive left in float (bisecting)")
        if accept.ok(cand[1]):
            best = cand
        else:
            failed = mid
    n = len(best[1]["excluded"])
    info["exclusion_note"] = (f"{accept.describe(best[1])} with {n} node{'' if n == 1 else 's'} in float"
                              + ("" if accept.ok(best[1]) else f": not reached even with {cap} nodes in float (the cap)"))
    return best
