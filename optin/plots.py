"""PNG figures next to the JSON reports (matplotlib, headless)."""
from __future__ import annotations


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def kept_widths(spec, path: str, title: str, dense_tokens: int | None = None) -> None:
    """Per-layer kept heads and neurons (and tokens, when some were dropped) as a fraction of dense."""
    plt = _plt()
    layers = range(len(spec.heads))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    dense_h, dense_n = spec.dense_widths()  # each layer's own dense width (Swin stages differ)
    series = [(spec.kept_heads, dense_h, "heads"), (spec.kept_neurons, dense_n, "FFN neurons")]
    if spec.tokens is not None and dense_tokens:
        series.append((spec.kept_tokens(dense_tokens), [dense_tokens] * len(spec.heads), "tokens"))
    series = [s for s in series if any(s[1])]  # a model without attention (CNN) has no heads to plot
    w = 0.8 / len(series)
    for k, (kept, dense, name) in enumerate(series):
        x = [i + (k - (len(series) - 1) / 2) * w for i in layers]
        of = dense[0] if len(set(dense)) == 1 else "the layer's"
        frac = [v / d if d else 0.0 for v, d in zip(kept, dense)]
        ax.bar(x, frac, w, label=f"{name} (of {of})")
        for xi, v, f in zip(x, kept, frac):
            ax.text(xi, f + 0.01, str(v), ha="center", fontsize=7)
    ax.set_xticks(list(layers))
    ax.set_xlabel("layer")
    ax.set_ylabel("kept fraction")
    ax.set_ylim(0, 1.12)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def recon_errors(recon: dict, path: str, title: str) -> None:
    """Relative calibration error of every sublayer before and after the re-fit (optin.reconstruct)."""
    plt = _plt()
    rows = recon["layers"]
    names = [f"{r['layer']}.{r['sublayer']}" for block in rows for r in block]
    before = [r["before"] for block in rows for r in block]
    after = [r["after"] for block in rows for r in block]
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(names) + 2), 3.2))
    x = range(len(names))
    ax.bar([i - 0.2 for i in x], before, 0.4, label="as narrowed")
    ax.bar([i + 0.2 for i in x], after, 0.4, label="re-fit")
    ax.set_xticks(list(x))
    ax.set_xticklabels(names, fontsize=7, rotation=90)
    ax.set_xlabel("block.sublayer (forward order)")
    ax.set_ylabel("relative error ‖out − target‖² / ‖target‖²")
    ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
