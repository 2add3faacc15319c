"""`optin` console script. Each subcommand parses its arguments and calls one library function;
heavy imports happen inside the call. Errors: one line on stderr, exit 2; a failed gate: exit 1."""
from __future__ import annotations

import argparse
import sys

from .errors import OptinError


def _add_prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="zoo name (minilm-rt, vit-fmnist, resnet-fmnist, efficientnet-lite0), local Hugging "
                   "Face folder, hub id, or timm:NAME[:CHECKPOINT] (a timm ViT / DeiT)")
    p.add_argument("--data", required=True, help="rotten-tomatoes, a CSV/JSONL file, hf:NAME[/CONFIG]; "
                   "images: fashion-mnist, imagefolder:DIR")
    p.add_argument("--calib-data", default=None, metavar="SPEC",
                   help="take the calibration examples from SPEC (same forms as --data); --data is then used "
                        "whole for evaluation (default: a seeded split of --data)")
    p.add_argument("--text-column", default=None, metavar="NAME",
                   help="CSV/JSONL/hf: column of the texts (default: text, sentence, sentence1, ...)")
    p.add_argument("--pair-column", default=None, metavar="NAME",
                   help="CSV/JSONL/hf: column of the second texts of a pair task (default: text_pair, sentence2, "
                        "..., if present)")
    p.add_argument("--label-column", default=None, metavar="NAME",
                   help="CSV/JSONL/hf: column of the labels (default: label, labels, category)")
    p.add_argument("--label-map", default=None, metavar="MAP",
                   help="data labels to the model's classes, e.g. pos=1,neg=0 (values: class ids or the model's "
                        "label names; default: ids as they are, names matched case-insensitively)")
    p.add_argument("--flops", type=float, default=0.6, help="MAC budget as a fraction of dense (0, 1]")
    p.add_argument("--out", required=True, help="output folder (written only when complete)")
    p.add_argument("--method", default="optin-est",
                   help="importance: optin-est (trajectory score estimated from backward passes, default), "
                        "optin-fast (the same estimate, one backward pass per probe for all layers), optin-fast-depth "
                        "(optin-fast with more of each probe's examples for the late layers), fisher-batch, "
                        "optin (exact trajectory, one masked pass per candidate), fisher, magnitude, random")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--calib", type=int, default=128, help="calibration examples")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=None,
                   help="tokens per example; MACs are counted at this length (default: model's, else 128; "
                   "images: patches + [CLS], fixed)")
    p.add_argument("--align", type=int, default=None,
                   help="keep FFN widths (CNN channels) at multiples of N (default: the family's; 8 for CNN "
                        "channels, 1 otherwise)")
    p.add_argument("--allocation", default=None, choices=["global", "even"],
                   help="how the budget is shared across layers: global (units of all layers ranked together by "
                        "score) or even (each layer keeps the same share, its best units by score); default: the "
                        "family's (even for ResNet, global otherwise)")
    p.add_argument("--select", default="auto", choices=["auto", "one-shot", "refit-split", "iterative", "iterative-units"],
                   help="auto (default): refit-split at budgets of at most 0.3 of MACs, one-shot above (and with "
                        "--no-reconstruct, --token-share or --latency-target); one-shot: one scoring of the dense "
                        "model, one search; refit-split: of the 5 best head/neuron splits of that search, the one "
                        "closest to dense after a re-fit on 128 examples (5 extra small re-fits); iterative: block "
                        "by block, each block's share and units chosen on the model whose lower blocks are already "
                        "pruned and re-fit (K-prune's order; one scoring per block); iterative-units: the one-shot "
                        "share per block, the units chosen so (neither beat one-shot on dev: docs/reconstruction.md)")
    p.add_argument("--token-share", type=float, default=0.0,
                   help="ViT/DeiT: part of the MAC reduction taken by dropping tokens, 0-1 (default 0: heads "
                        "and neurons only); the rest comes from heads and neurons")
    p.add_argument("--group-size", type=int, default=32, help="neurons scored together (exact optin)")
    p.add_argument("--lam", type=float, default=0.1, help="KD weight λ in the trajectory score (optin)")
    p.add_argument("--depth", default="normalized", help="trajectory combination: normalized, sum, mean, final")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate on at most N test examples")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda",
                   help="where the model, scoring, evaluation and the re-fit run (default auto: cuda when torch sees "
                        "a GPU; cuda:N for one GPU; under torchrun each rank takes its LOCAL_RANK GPU)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="precision of the scoring and evaluation passes (autocast; Gram matrices and KL stay float32, "
                        "the re-fit float64, the saved weights float32); float16 only for methods without gradients")
    p.add_argument("--no-fvcore", action="store_true", help="skip the fvcore MAC cross-check")
    p.add_argument("--no-bn-recalib", action="store_true",
                   help="keep the dense model's BatchNorm statistics after narrowing (CNNs; default: re-estimate "
                        "them on the calibration images, a forward pass, no training)")
    p.add_argument("--no-reconstruct", action="store_true",
                   help="skip the closed-form re-fit of the weights that read the kept units (default: re-fit them "
                        "on calibration data after narrowing, bottom to top; same shapes, same speed)")
    p.add_argument("--recon-calib", type=int, default=512,
                   help="calibration examples for the re-fit, from the calibration split (default 512)")
    p.add_argument("--recon-damp", type=float, default=1e-2,
                   help="ridge damping of the re-fit towards the current weights, relative to the mean input "
                        "energy (default 0.01)")
    p.add_argument("--latency-target", type=float, default=None,
                   help="re-tune the mask until the measured speedup over dense reaches X (replaces --flops)")
    p.add_argument("--backend", default="onnxruntime", help="backend the latency is measured on")
    p.add_argument("--batch", type=int, default=8, help="deployment batch size (latency)")
    p.add_argument("--seq", type=int, default=None, help="deployment sequence length (default: --max-length)")
    p.add_argument("--retune-rounds", type=int, default=6,
                   help="at most N measured re-tune rounds (the goal moves both ways, stopping within 5%% of the target)")


def _prune_config(a):
    from .importance import ScoreConfig
    from .prune import PruneConfig
    from .reconstruct import ReconConfig

    return PruneConfig(flops=a.flops, method=a.method, seed=a.seed, calib=a.calib, batch_size=a.batch_size,
                       max_length=a.max_length, align=a.align, allocation=a.allocation, select=a.select, token_share=a.token_share, eval_limit=a.eval_limit,
                       fvcore=not a.no_fvcore, bn_recalib=not a.no_bn_recalib, reconstruct=not a.no_reconstruct,
                       recon=ReconConfig(damp=a.recon_damp, calib=a.recon_calib),
                       score=ScoreConfig(seed=a.seed, group_size=a.group_size, lam=a.lam, depth=a.depth),
                       data=_data_options(a), device=a.device, dtype=a.dtype)


def _data_options(a):
    from .data import DataOptions
    from .labels import parse_label_map

    return DataOptions(calib_data=a.calib_data, text_column=a.text_column, pair_column=a.pair_column,
                       label_column=a.label_column, label_map=parse_label_map(a.label_map))


def _latency_target(a):
    from .retune import LatencyTarget

    if a.latency_target is None:
        return None
    return LatencyTarget(a.latency_target, a.backend, a.batch, a.seq or a.max_length or 64, a.retune_rounds)


def cmd_prune(a) -> int:
    from .prune import prune

    prune(a.model, a.data, a.out, _prune_config(a), latency=_latency_target(a))
    return 0


def cmd_run(a) -> int:
    from .run import RunConfig, run

    from .deploy_cli import run_engine_config

    rep = run(a.model, a.data, a.out, _prune_config(a),
              RunConfig(backend=a.backend, batch=a.batch, seq=a.seq, iters=a.iters, min_speedup=a.min_speedup,
                        latency_target=a.latency_target, retune_rounds=a.retune_rounds,
                        engine=run_engine_config(a), max_accuracy_drop=a.max_accuracy_drop))
    if rep is None:  # a torchrun helper rank: it only scored
        return 0
    return 1 if rep["gate"] is not None and not rep["gate"]["passed"] else 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="optin", description="One-shot structured pruning of transformers "
                                 "to a MAC budget, without retraining, ending in a measured engine.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prune", help="score units, search a mask under a MAC budget, narrow the model")
    _add_prune_args(p)
    p.set_defaults(func=cmd_prune)
    p = sub.add_parser("run", help="prune → export → engine → profile against dense → gate, in one folder")
    _add_prune_args(p)
    p.add_argument("--iters", type=int, default=200, help="timed iterations per model")
    p.add_argument("--min-speedup", type=float, default=None,
                   help="gate threshold (default: --latency-target less its 5%% tolerance)")
    p.add_argument("--max-accuracy-drop", type=float, default=None,
                   help="gate: the engine's test accuracy may fall at most P points below the dense model's")
    from .deploy_cli import _engine_args, precision_args

    precision_args(p, run=True)
    _engine_args(p)
    p.set_defaults(func=cmd_run)
    from .deploy_cli import add_commands

    add_commands(sub)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    try:
        return a.func(a)
    except OptinError as e:
        print(f"optin {a.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"optin {a.command}: interrupted; no output was written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
