"""The deploy half of the `optin` CLI: export, engine, profile, gate.

Each subcommand parses its arguments and calls one library function (heavy imports inside the
call); errors are OptinErrors, which optin.cli turns into one line and exit code 2. A gate that
is missed returns exit code 1.
"""
from __future__ import annotations

import argparse


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, e.g. 1,8,32, got {text!r}") from None


def _engine_args(p) -> None:
    p.add_argument("--provider", default="cpu", choices=["cpu", "cuda", "tensorrt"],
                   help="ONNX Runtime execution provider (it is checked that this one really ran)")
    p.add_argument("--level", default="all", choices=["disable", "basic", "extended", "all"],
                   help="ONNX Runtime graph optimization level")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads of ONNX Runtime or torch (default: the runtime's own)")
    p.add_argument("--spin", action="store_true",
                   help="let ORT threads busy-wait (faster on an idle dedicated machine, slower on a shared one)")
    p.add_argument("--onnx-file", default="model.onnx", help="model.onnx, or model.opt.onnx after export --optimize")


def precision_args(p, run: bool = False) -> None:
    """--fp16 / --int8 and the INT8 settings, shared by `optin engine` and `optin run` (run: its
    own --calib and --eval-limit are the pruner's, so INT8 calibration takes --int8-calib)."""
    p.add_argument("--fp16", action="store_true",
                   help="float16: TensorRT FP16 kernels; ONNX Runtime a float16 graph (--provider cuda or tensorrt)")
    p.add_argument("--int8", action="store_true",
                   help="INT8: TensorRT calibrated on the calibration split; ONNX Runtime quantised (--int8-mode)")
    p.add_argument("--int8-mode", default="dynamic", choices=["dynamic", "static"],
                   help="ONNX Runtime INT8: dynamic (weights ahead of time, activations per batch) or static "
                        "(QDQ, activation ranges calibrated on the calibration split)")
    p.add_argument("--calib-method", default=None, choices=["minmax", "entropy", "percentile"],
                   help="INT8 calibration (default: minmax for ONNX Runtime, entropy for TensorRT)")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None,
                   help="ONNX Runtime INT8: per-channel weight scales (default: on, except static on a graph with Conv or for the TensorRT provider)")
    p.add_argument("--int8-exclude", default="auto",
                   help="nodes left in float: auto (by sensitivity on calibration data), none, or NODE,NODE")
    p.add_argument("--int8-min-agreement", type=float, default=0.97,
                   help="auto exclusion: argmax agreement with float32 wanted on held-out calibration samples")
    p.add_argument("--int8-calib" if run else "--calib", dest="int8_calib", type=int, default=256,
                   help="INT8 calibration samples")
    p.add_argument("--calib-seed", type=int, default=0, help="INT8: seed of the calibration samples' order")
    if run:
        return
    p.add_argument("--eval-limit", type=int, default=None,
                   help="score the engine on at most N test examples (default: as many as the pruner did)")
    p.add_argument("--no-eval", action="store_true", help="skip the engine's test-accuracy check")


def _quant_config(a):
    from export.quantize import QuantConfig

    return QuantConfig(mode=a.int8_mode, method=a.calib_method, per_channel=a.per_channel, seed=a.calib_seed,
                       exclude=a.int8_exclude, min_agreement=a.int8_min_agreement)


def _engine_config(a):
    from export.engines import EngineConfig, parse_shape

    kw = dict(provider=a.provider, level=a.level, threads=a.threads, spin=a.spin, onnx_file=a.onnx_file)
    if hasattr(a, "fp16"):
        kw.update(fp16=a.fp16, int8=a.int8, calib_samples=a.int8_calib, quant=_quant_config(a),
                  eval=not getattr(a, "no_eval", False), eval_limit=a.eval_limit)
    if hasattr(a, "min_shape"):
        kw.update(workspace_mib=a.workspace_mib, tol=a.tol, min_shape=parse_shape(a.min_shape),
                  opt_shape=parse_shape(a.opt_shape), max_shape=parse_shape(a.max_shape))
    return EngineConfig(**kw)


def run_engine_config(a):
    """`optin run`'s engine settings (its --eval-limit is the pruner's, used for both)."""
    return _engine_config(a)


def cmd_export(a) -> int:
    from export.onnx import export_onnx

    export_onnx(a.dir, opset=a.opset, optimize=a.optimize, dynamo=a.dynamo, tol=a.tol, samples=a.samples)
    return 0


def cmd_engine(a) -> int:
    from export.engines import build_engine

    build_engine(a.dir, a.backend, _engine_config(a))
    return 0


def cmd_profile(a) -> int:
    from profiling.latency import ProfileConfig, profile

    profile(a.dir, ProfileConfig(backend=a.backend, batch=a.batch, seq=a.seq, iters=a.iters, warmup=a.warmup,
                                 against=a.against, sweep_batch=a.sweep_batch, sweep_seq=a.sweep_seq,
                                 engine=_engine_config(a), device=a.device, fp16=a.torch_fp16,
                                 cuda_graphs=a.cuda_graphs))
    return 0


def cmd_gate(a) -> int:
    from profiling.gate import gate

    return 0 if gate(a.dir, a.min_speedup, a.min_flop_efficiency, a.junit, a.max_accuracy_drop)["passed"] else 1


def add_commands(sub) -> None:
    """Add export, engine, profile and gate to the `optin` subparsers."""
    p = sub.add_parser("export", help="export DIR to ONNX (DIR/model.onnx), checked against PyTorch")
    p.add_argument("dir", help="folder written by `optin prune` (or a dense Hugging Face folder)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 17; 18 with --dynamo)")
    p.add_argument("--dynamo", action="store_true", help="use the torch.export-based exporter (opset 18+)")
    p.add_argument("--optimize", action="store_true",
                   help="also write model.opt.onnx with ONNX Runtime's transformer fusions")
    p.add_argument("--tol", type=float, default=1e-4, help="max |ONNX - PyTorch| on the logits")
    p.add_argument("--samples", type=int, default=64, help="calibration samples for the parity check")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("engine", help="build an engine (TensorRT plan or checked ONNX Runtime session) for DIR")
    p.add_argument("dir")
    p.add_argument("--backend", required=True, choices=["tensorrt", "onnxruntime"])
    precision_args(p)
    p.add_argument("--min-shape", default="1x8", help="TensorRT profile minimum, BATCHxSEQ")
    p.add_argument("--opt-shape", default="8x64", help="TensorRT profile optimum (also the INT8 calibration shape)")
    p.add_argument("--max-shape", default="32x128", help="TensorRT profile maximum")
    p.add_argument("--workspace-mib", type=int, default=2048, help="TensorRT builder workspace")
    p.add_argument("--tol", type=float, default=None,
                   help="parity max |engine - PyTorch| (default per precision: fp32 1e-4 ORT / 1e-3 TensorRT; "
                        "ORT fp16 5e-2 + 1%% of max |logit|, TensorRT fp16 5e-2; int8 none: argmax agreement 0.90 "
                        "alone, and the task accuracy; a value given here bounds INT8 too)")
    _engine_args(p)
    p.set_defaults(func=cmd_engine)

    p = sub.add_parser("profile", help="measure latency (and speedup over dense) → DIR/profile.json, profile.png")
    p.add_argument("dir")
    p.add_argument("--against", default=None, help="dense model to compare with: zoo name, HF folder or model folder")
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "tensorrt", "torch"])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64, help="tokens per example (every position real and attended)")
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--sweep-batch", type=_ints, default=(), help="also measure these batch sizes, e.g. 1,8,32")
    p.add_argument("--sweep-seq", type=_ints, default=(), help="also measure these sequence lengths, e.g. 32,64,128")
    p.add_argument("--device", default=None, metavar="auto|cpu|cuda",
                   help="--backend torch: where both models run (default: the CPU); on CUDA each iteration is "
                        "timed by CUDA events")
    # its own dest: an `fp16` attribute means the engine's precision flags to _engine_config
    p.add_argument("--fp16", dest="torch_fp16", action="store_true",
                   help="--backend torch --device cuda: dense and pruned in float16")
    p.add_argument("--cuda-graphs", action="store_true",
                   help="--backend torch --device cuda: capture each model's forward pass once per shape, replay it")
    _engine_args(p)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("gate", help="pass/fail DIR/profile.json against speed targets (exit 0 pass, 1 fail, 2 error)")
    p.add_argument("dir")
    p.add_argument("--min-speedup", type=float, default=None, help="minimum measured speedup over dense")
    p.add_argument("--min-flop-efficiency", type=float, default=None,
                   help="minimum measured / MAC-implied speedup (1.0: as fast as the MACs promise)")
    p.add_argument("--max-accuracy-drop", type=float, default=None,
                   help="maximum test-accuracy drop of the engine against the dense model, in points (engine.json)")
    p.add_argument("--junit", default=None, help="JUnit XML path (default DIR/gate.xml)")
    p.set_defaults(func=cmd_gate)
