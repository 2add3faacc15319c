"""GPU numbers in one run (about 5 minutes on one NVIDIA GPU; `--smoke`: tiny sizes on the CPU,
seconds): scoring time of Fisher, the default scorer and exact heads-only OPTIN on BERT-base- and
DeiT-S-shaped models (random init, transformers' BertForSequenceClassification /
ViTForImageClassification: random weights time the same as trained ones), 128 examples (text:
128 tokens; images: 224×224, 197 tokens); then torch fp16 latency, eager and CUDA graph, of the
dense model against models narrowed to the widths the MAC search picks at 0.3–0.9 of dense
MACs (from the Fisher scores just computed), batch 1/8/32/128, CUDA-event timing, dense and
pruned interleaved (A B, B A, …); speedup = ratio of medians.

    PYTHONPATH=. python bench/gpu.py [--smoke] [--out bench/results/gpu.json]

Needs only PyTorch (with CUDA), transformers and this tree on PYTHONPATH (tqdm, which the scorers'
progress bars use, comes with transformers: huggingface_hub requires it); matplotlib, onnx and
onnxruntime are used when present (the plot falls back to a plain SVG). Attention runs through PyTorch's
SDPA with no attention mask (every token real). Writes the JSON and gpu.png (or gpu.svg)."""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # run from a checkout

from optin.adapters import adapter_for  # noqa: E402
from optin.importance import ScoreConfig, get_method  # noqa: E402
from optin.importance import trajectory as traj  # noqa: E402
from optin.narrow import narrow  # noqa: E402
from optin.prune import PruneConfig, dense_model_macs  # noqa: E402
from optin.search import search  # noqa: E402
from optin.spec import PruneSpec  # noqa: E402

BUDGETS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
BATCHES = (1, 8, 32, 128)


def shapes(smoke: bool) -> dict:
    from transformers import BertConfig, ViTConfig

    if smoke:
        return {"bert-base": BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=128, vocab_size=500, num_labels=2),
                "deit-s": ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                                    image_size=32, patch_size=8, num_labels=10)}
    # bert-base-uncased and DeiT-S/16 (224×224, 16×16 patches: 196 + [CLS] tokens, 1000 classes)
    return {"bert-base": BertConfig(num_labels=2),
            "deit-s": ViTConfig(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                                image_size=224, patch_size=16, num_labels=1000)}


def build(name: str, cfg):
    from transformers import BertForSequenceClassification, ViTForImageClassification

    torch.manual_seed(0)
    cls = BertForSequenceClassification if name.startswith("bert") else ViTForImageClassification
    return cls(cfg).eval()


def inputs(model, n: int, seq: int, device, g: torch.Generator, labels: bool = True) -> dict:
    c = model.config
    if c.model_type == "vit":
        b = {"pixel_values": torch.randn(n, 3, c.image_size, c.image_size, generator=g)}
    else:
        b = {"input_ids": torch.randint(1000 % c.vocab_size, c.vocab_size, (n, seq), generator=g),
             "attention_mask": torch.ones(n, seq, dtype=torch.long)}
    if labels:
        b["labels"] = torch.randint(0, c.num_labels, (n,), generator=g)
    return {k: v.to(device) for k, v in b.items()}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def scoring(model, name, calib, seq, device, log) -> tuple[list, object]:
    """Seconds per scorer on the same calibration batches; returns the rows and Fisher's scores."""
    ad = adapter_for(model.to(device))
    g = torch.Generator().manual_seed(0)
    batches = [inputs(model, min(32, calib - s), seq, device, g) for s in range(0, calib, 32)]
    default = PruneConfig().method
    orig = traj._candidates
    rows, fisher_scores = [], None
    for method in ("fisher", "fisher-batch", default, "optin-heads"):
        if method == "optin-heads":  # exact trajectory scoring of the heads alone (neurons skipped)
            traj._candidates = lambda d, proxy, gs: [c for c in orig(d, proxy, gs) if c[1] == "head"]
        try:
            sync(device)
            t = time.perf_counter()
            s = get_method("optin" if method == "optin-heads" else method)(ad, batches, ScoreConfig())
            sync(device)
            secs = time.perf_counter() - t
        finally:
            traj._candidates = orig
        if method == "fisher":
            fisher_scores = s
        rows.append({"model": name, "method": method, "seconds": secs, "calibration": calib, "seq": seq,
                     "default": method == default})
        log(f"{name}: {method} scoring {secs:.2f} s")
    model.cpu()
    return rows, fisher_scores


def timer(device):
    """A function that times fn() once, in ms: CUDA events on a GPU, perf_counter on the CPU."""
    if device.type == "cuda":
        def run(fn):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            return a.elapsed_time(b)
    else:
        def run(fn):
            t = time.perf_counter()
            fn()
            return (time.perf_counter() - t) * 1e3
    return run


def runner(model, feed: dict, device, graph: bool):
    """fn() running the model once on `feed`: eager, or a captured CUDA graph replayed."""
    def eager():
        model(**feed)

    if not graph:
        return eager
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            eager()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        model(**feed)
    return g.replay


def interleaved(fa, fb, time_once, iters: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        fa(), fb()
    ta, tb = [], []
    for i in range(iters):
        for f, acc in (((fa, ta), (fb, tb)) if i % 2 == 0 else ((fb, tb), (fa, ta))):
            acc.append(time_once(f))
    med = lambda x: sorted(x)[len(x) // 2]  # noqa: E731
    return med(ta), med(tb)


def narrowed(dense, scores, budget: float, seq: int):
    """A copy of `dense` narrowed to the widths the MAC search picks at `budget` from `scores`."""
    m = copy.deepcopy(dense)
    ad = adapter_for(m)
    n = ad.seq_len(seq)
    total = dense_model_macs(ad, n)
    r = search(scores.heads, scores.neurons, ad.cost_model(n), budget * total, 1)
    spec = PruneSpec.from_masks(m.config.model_type, r.head_mask, r.neuron_mask, dims=ad.dims())
    narrow(ad, spec)
    return m, ad.spec_macs(spec, n) / total, spec


def latency(dense, name, scores, seq, device, budgets, batches, iters, warmup, log) -> list:
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    time_once = timer(device)
    g = torch.Generator().manual_seed(1)
    feeds = {}
    for b in batches:
        f = inputs(dense, b, seq, device, g, labels=False)
        f.pop("attention_mask", None)  # every token real: SDPA without a mask
        feeds[b] = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in f.items()}
    d_model = copy.deepcopy(dense).to(device=device, dtype=dtype)
    rows = []
    for budget in budgets:
        p_cpu, ratio, spec = narrowed(dense, scores, budget, seq)
        p_model = p_cpu.to(device=device, dtype=dtype)
        for b in batches:
            for graph in ((False, True) if device.type == "cuda" else (False,)):
                row = {"model": name, "budget": budget, "mac_ratio": ratio, "mac_implied": 1 / ratio, "batch": b,
                       "seq": adapter_for(dense).seq_len(seq), "mode": "cuda-graph" if graph else "eager",
                       "dtype": str(dtype).replace("torch.", ""), "kept_heads": spec.kept_heads,
                       "kept_neurons": spec.kept_neurons}
                try:
                    with torch.inference_mode():
                        fa = runner(d_model, feeds[b], device, graph)
                        fb = runner(p_model, feeds[b], device, graph)
                        row["dense_ms"], row["pruned_ms"] = interleaved(fa, fb, time_once, iters, warmup)
                    row["speedup"] = row["dense_ms"] / row["pruned_ms"]
                except Exception as e:  # a capture that fails is reported, not hidden
                    row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
                rows.append(row)
                log(f"{name} @ {budget} b{b} {row['mode']}: " + (
                    f"{row['dense_ms']:.3f} / {row['pruned_ms']:.3f} ms = {row['speedup']:.2f}x "
                    f"(MAC-implied {1 / ratio:.2f}x)" if "speedup" in row else row["error"]))
        del p_model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def machine(device) -> dict:
    import transformers

    out = {"device": str(device), "torch": torch.__version__, "transformers": transformers.__version__,
           "python": platform.python_version(), "cpu_count": os.cpu_count()}
    for mod in ("onnx", "onnxruntime"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        out.update(gpu=p.name, gpu_memory_gb=round(p.total_memory / 2**30, 1), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(), capability=f"{p.major}.{p.minor}")
        try:
            out["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            out["driver"] = None
    return out


def plot(res: dict, path_base: str) -> str:
    """Speedup against MACs kept, one panel per model, a line per batch and mode."""
    series = {}
    for r in res["latency"]:
        if "speedup" in r:
            series.setdefault(r["model"], {}).setdefault(f"b{r['batch']} {r['mode']}", []).append(
                (r["mac_ratio"], r["speedup"]))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return _svg(series, path_base + ".svg", res["machine"].get("gpu") or res["machine"]["device"])
    fig, axes = plt.subplots(1, max(1, len(series)), figsize=(5.5 * max(1, len(series)), 4), squeeze=False)
    for ax, (model, lines) in zip(axes[0], series.items()):
        for label, pts in lines.items():
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "o" + ("--" if "graph" in label else "-"), ms=3,
                    label=label)
        xs = sorted({p[0] for pts in lines.values() for p in pts})
        ax.plot(xs, [1 / x for x in xs], color="gray", ls=":", label="MAC-implied")
        ax.set(xlabel="MACs kept (fraction of dense)", ylabel="speedup over dense (fp16, interleaved)")
        ax.set_title(f"{model} on {res['machine'].get('gpu') or res['machine']['device']}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path_base + ".png", dpi=110)
    return path_base + ".png"


def _svg(series: dict, path: str, title: str) -> str:
    """The same plot as plain SVG, for a machine without matplotlib."""
    W, H, pad = 420, 300, 40
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
    parts = []
    for k, (model, lines) in enumerate(series.items()):
        ys = [p[1] for pts in lines.values() for p in pts] + [1 / p[0] for pts in lines.values() for p in pts]
        y0, y1 = 0.0, max(ys) * 1.1

        def xy(x, y, k=k, y1=y1):
            return k * W + pad + (x - 0.2) / 0.8 * (W - 2 * pad), H - pad - (y - y0) / (y1 - y0) * (H - 2 * pad)
        parts.append(f'<text x="{k * W + pad}" y="20" font-size="12">{model} on {title} (speedup vs MACs kept)</text>')
        parts.append(f'<rect x="{k * W + pad}" y="{pad}" width="{W - 2 * pad}" height="{H - 2 * pad}" fill="none" '
                     'stroke="black"/>')
        for j, (label, pts) in enumerate(sorted(lines.items())):
            pts = sorted(pts)
            c = colours[j % len(colours)]
            path_d = " ".join(f"{'M' if i == 0 else 'L'}{xy(*p)[0]:.1f},{xy(*p)[1]:.1f}" for i, p in enumerate(pts))
            dash = ' stroke-dasharray="4,3"' if "graph" in label else ""
            parts.append(f'<path d="{path_d}" fill="none" stroke="{c}"{dash}/>')
            parts.append(f'<text x="{k * W + W - pad - 90}" y="{pad + 12 + 11 * j}" font-size="9" fill="{c}">{label}</text>')
        for v in (1, 2, 3):
            if v < y1:
                _, y = xy(0.2, v)
                parts.append(f'<text x="{k * W + 8}" y="{y:.1f}" font-size="9">{v}x</text>')
    with open(path, "w") as fh:
        fh.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W * max(1, len(series))}" height="{H}">'
                 + "".join(parts) + "</svg>\n")
    return path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny models and sizes on the CPU: seconds")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "gpu.json"))
    ap.add_argument("--iters", type=int, default=None, help="timed pairs per point (default 60; smoke 3)")
    a = ap.parse_args(argv)
    t0 = time.time()
    device = torch.device("cpu" if a.smoke or not torch.cuda.is_available() else "cuda")
    if a.smoke:
        torch.set_num_threads(1)  # tiny models: threads only add jitter on a shared CPU
    calib, seq = (8, 16) if a.smoke else (128, 128)
    budgets, batches = ((0.5, 0.8), (1, 2)) if a.smoke else (BUDGETS, BATCHES)
    iters = a.iters or (3 if a.smoke else 60)
    warmup = 1 if a.smoke else 10
    log = lambda s: print(f"[{time.time() - t0:6.1f} s] {s}", flush=True)  # noqa: E731
    res = {"smoke": a.smoke, "machine": machine(device), "scoring": [], "latency": [],
           "settings": {"calibration": calib, "seq": seq, "budgets": list(budgets), "batches": list(batches),
                        "iters": iters, "warmup": warmup, "timing": "CUDA events" if device.type == "cuda" else
                        "perf_counter", "attention": "SDPA, no attention mask", "scores_for_widths": "fisher",
                        "scoring_precision": "float32", "latency_precision": "float16" if device.type == "cuda"
                        else "float32", "default_method": PruneConfig().method}}
    if device.type == "cpu" and not a.smoke:
        log("no CUDA device: running the full sizes on the CPU (slow); use --smoke for a quick check")
    for name, cfg in shapes(a.smoke).items():
        model = build(name, cfg)
        rows, scores = scoring(model, name, calib, seq, device, log)
        res["scoring"] += rows
        res["latency"] += latency(model, name, scores, seq, device, budgets, batches, iters, warmup, log)
        del model
    res["seconds"] = time.time() - t0
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as fh:
        json.dump(res, fh, indent=1)
    res["plot"] = plot(res, os.path.splitext(a.out)[0])
    with open(a.out, "w") as fh:
        json.dump(res, fh, indent=1)
    log(f"wrote {a.out} and {res['plot']}")
    return res


if __name__ == "__main__":
    main()
