"""PNG figures next to the JSON reports (matplotlib, headless)."""
from __future__ import annotations


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def kept_widths(spec, path: str, title: str) -> None:
    """Per-layer kept heads and neurons as a fraction of the dense width."""
    plt = _plt()
    layers = range(len(spec.heads))
    fig, ax = plt.subplots(figsize=(7, 3.2))
    w = 0.4
    ax.bar([i - w / 2 for i in layers], [h / spec.num_heads for h in spec.kept_heads], w,
           label=f"heads (of {spec.num_heads})")
    ax.bar([i + w / 2 for i in layers], [n / spec.ffn_size for n in spec.kept_neurons], w,
           label=f"FFN neurons (of {spec.ffn_size})")
    for i, (h, n) in enumerate(zip(spec.kept_heads, spec.kept_neurons)):
        ax.text(i - w / 2, h / spec.num_heads + 0.01, str(h), ha="center", fontsize=7)
        ax.text(i + w / 2, n / spec.ffn_size + 0.01, str(n), ha="center", fontsize=7)
    ax.set_xticks(list(layers))
    ax.set_xlabel("layer")
    ax.set_ylabel("kept fraction")
    ax.set_ylim(0, 1.12)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
