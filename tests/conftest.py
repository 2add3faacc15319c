"""Shared fixtures: tiny randomly initialised classifiers, one per registered family."""
from __future__ import annotations

import pytest
import torch

TINY = dict(hidden=32, heads=4, layers=3, ffn=48, vocab=120, labels=3)


VISION = ("vit", "deit", "swin", "timm_vit")  # image classifiers: 12×12 single-channel images in 4×4 patches (9 + special tokens)
# Swin: 2×2 patches (a 6×6 grid, 3×3 windows, the second block shifted), two stages of 2 + 1 blocks:
# widths 16 then 32, heads 2 then 4 (head size 8), FFN 24 then 48: at most TINY's heads and FFN.
CNN = ("resnet", "efficientnet_lite")  # 12×12 single-channel images too; 3 prunable blocks, no heads
# segmenters (optin.models.swin_seg): the tiny Swin above plus an all-MLP decoder 8 wide; labels are
# 12×12 class-id maps, the logits [B, classes, 12, 12]
SEG = ("swin_seg",)
VISION = VISION + CNN + SEG


def _tiny_cnn_config(model_type: str, labels: int, layer_type: str = "basic"):
    """ResNet: stem 8, stages of 2 + 1 blocks (12×12 → 3×3 after the stem, 2×2 after the stride-2
    stage); basic blocks 8/16 wide (inner 8, 8, 16), bottlenecks 16/32 wide (two inner runs of
    4, 4, 8). EfficientNet-Lite: stem 8 (12 → 6, TF SAME pads right and bottom), a non-expanding
    block, then expanding blocks 8→12 (stride 2, k3), 12→12 (residual), 12→16 (stride 2, k5):
    24, 36 and 24 expanded channels."""
    from transformers import AutoConfig

    from optin.adapters import ADAPTERS  # noqa: F401  (registers efficientnet_lite with AutoConfig)

    if model_type == "resnet":
        wide = layer_type == "bottleneck"
        return AutoConfig.for_model("resnet", num_labels=labels, num_channels=1, image_size=12, embedding_size=8,
                                    hidden_sizes=[16, 32] if wide else [8, 16], depths=[2, 1], layer_type=layer_type)
    return AutoConfig.for_model(model_type, num_labels=labels, num_channels=1, image_size=12, stem_size=8, head_size=32,
                                stages=((1, 3, 1, 1, 8, 8), (2, 3, 2, 3, 8, 12), (1, 5, 2, 2, 12, 16)))


@torch.no_grad()
def randomise_batchnorms(model, spread: float):
    """Fresh BatchNorms are identities: give them weights and statistics that matter."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, spread)
            m.running_mean.normal_(0, spread)
            m.running_var.uniform_(0.5, 1.5)
    return model


@torch.no_grad()
def randomise_timm(model, std: float = 0.3):
    """timm initialises with std 0.02 (near-constant logits on a tiny model): weights, biases,
    norms, tokens and position embeddings that matter, like initializer_range=0.3 elsewhere."""
    for name, p in model.named_parameters():
        if name.endswith(("norm1.weight", "norm2.weight", "norm.weight", "gamma")):
            p.uniform_(0.5, 1.5)
        else:
            p.normal_(0, std if p.dim() > 1 or "token" in name or "pos_embed" in name else 0.1)
    return model


def tiny_timm_vit(t: dict, timm_model: str = "vit_tiny_patch16_224", **kwargs):
    """A timm ViT (optin.models.timm_vit) of TINY's widths: 12×12 single-channel images in 4×4
    patches; kwargs go to timm.create_model (global_pool, init_values, reg_tokens, ...)."""
    from optin.adapters import ADAPTERS
    from optin.models.timm_vit import TimmVitConfig

    cfg = TimmVitConfig(timm_model=timm_model, image_size=12, patch_size=4, num_channels=1, hidden_size=t["hidden"],
                        num_hidden_layers=t["layers"], num_attention_heads=t["heads"], intermediate_size=t["ffn"],
                        num_labels=t["labels"], timm_kwargs=kwargs or None)
    return randomise_timm(ADAPTERS["timm_vit"].from_config(cfg).eval())


def tiny_model(model_type: str, seed: int = 0, eager: bool = False, **dims):
    from transformers import AutoConfig

    from optin.adapters import ADAPTERS

    torch.manual_seed(seed)
    t = {**TINY, **dims}
    if model_type == "timm_vit":
        return tiny_timm_vit(t, **{k: v for k, v in dims.items() if k not in TINY})
    if model_type in CNN:
        model = ADAPTERS[model_type].from_config(_tiny_cnn_config(model_type, t["labels"], **{
            k: v for k, v in dims.items() if k == "layer_type"})).eval()
        return randomise_batchnorms(model, 0.3)
    if model_type == "distilbert":
        kw = dict(dim=t["hidden"], n_heads=t["heads"], n_layers=t["layers"], hidden_dim=t["ffn"])
    elif model_type in ("swin", *SEG):
        kw = dict(embed_dim=t["hidden"] // 2, depths=(t["layers"] - 1, 1), num_heads=(t["heads"] // 2, t["heads"]),
                  mlp_ratio=t["ffn"] / t["hidden"], window_size=3)
        if model_type in SEG:
            kw.update(decoder_hidden_size=8)
    else:
        kw = dict(hidden_size=t["hidden"], num_attention_heads=t["heads"], num_hidden_layers=t["layers"],
                  intermediate_size=t["ffn"])
    if model_type in VISION:
        kw.update(image_size=12, patch_size=2 if model_type in ("swin", *SEG) else 4, num_channels=1)
    else:
        kw.update(vocab_size=t["vocab"], max_position_embeddings=64)
    cfg = AutoConfig.for_model(model_type, num_labels=t["labels"], initializer_range=0.3, **kw)
    if eager:
        cfg._attn_implementation = "eager"
    model = ADAPTERS[model_type].from_config(cfg).eval()
    with torch.no_grad():  # transformers zero-initialises Swin's relative-position bias: make it count
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0, 0.3)
    return model


def awkward_spec(model_type: str):
    """Non-uniform heads, a layer with no heads, a layer with no neurons, on TINY's 3 layers of 4 heads
    and 48 neurons; units beyond a narrower layer's own width (Swin's first stage) are left out."""
    from optin.adapters import adapter_for
    from optin.spec import PruneSpec

    hm, nm = PruneSpec(model_type, 4, 48, ((0, 2), (), (1, 2, 3)),
                       (tuple(range(0, 48, 2)), tuple(range(10)), ())).masks()
    dims = adapter_for(tiny_model(model_type)).dims()
    ph, pn = dims.present()  # a CNN has no heads: [3, 0]
    return PruneSpec.from_masks(model_type, hm[:, :dims.num_heads] * ph, nm[:, :dims.ffn_size] * pn, dims=dims)


_FAMILY = {"current": "bert"}  # set by the `family` fixture: tiny_batches() then fits the family under test


def masked_and_narrowed(model, spec, batch: dict):
    """(dense, masked, narrowed) logits of `model` on `batch`: as it is, under spec's masks
    (optin.masking), and after narrowing it in place to spec: what "narrowed = masked" compares."""
    from optin.adapters import adapter_for
    from optin.masking import mask_hooks
    from optin.narrow import narrow

    a = adapter_for(model)
    with torch.no_grad():
        dense = model(**batch).logits
        with mask_hooks(a) as state:
            state.set(*spec.masks())
            masked = model(**batch).logits
        narrow(a, spec)
        narrowed = model(**batch).logits
    return dense, masked, narrowed


def tiny_batches(n_batches=2, batch=4, seq=10, seed=0, labels=3, model_type=None):
    """Token batches with ragged padding; for an image family, 12×12 single-channel images.
    model_type defaults to the family of the running `family`-parametrised test (else BERT)."""
    model_type = model_type or _FAMILY["current"]
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        if model_type in VISION:
            out.append({"pixel_values": torch.randn(batch, 1, 12, 12, generator=g),
                        "labels": torch.randint(0, labels, (batch, 12, 12) if model_type in SEG else (batch,),
                                                generator=g)})
            continue
        ids = torch.randint(5, 100, (batch, seq), generator=g)
        mask = torch.ones(batch, seq, dtype=torch.long)
        for j in range(batch):  # ragged lengths so padding is exercised
            n = int(torch.randint(3, seq + 1, (1,), generator=g))
            mask[j, n:] = 0
            ids[j, n:] = 1  # pad id for RoBERTa, plain token elsewhere; masked either way
        ids[:, 0] = 0
        out.append({"input_ids": ids, "attention_mask": mask,
                    "labels": torch.randint(0, labels, (batch,), generator=g)})
    return out


def missing(model_type: str) -> list[str]:
    """The packages a family needs that this environment lacks (timm: `make test-timm` has them)."""
    import importlib.util

    from optin.adapters import ADAPTERS

    return [p for p in ADAPTERS[model_type].requires if importlib.util.find_spec(p) is None]


def families(attention_only: bool = False, installed: bool = False):
    """Every registered model type, so a new one is tested without a list to edit; a family whose
    packages are missing here is a skipped parameter (or left out, with installed=True)."""
    from optin.adapters import ADAPTERS

    out = sorted(t for t in ADAPTERS if ADAPTERS[t].has_attention or not attention_only)
    if installed:
        return [t for t in out if not missing(t)]
    return [pytest.param(t, marks=pytest.mark.skipif(bool(missing(t)), reason=f"needs {', '.join(missing(t))}: "
                                                     "make test-timm runs it")) for t in out]


@pytest.fixture(params=families())
def family(request):
    _FAMILY["current"] = request.param
    yield request.param
    _FAMILY["current"] = "bert"


@pytest.fixture(params=families(attention_only=True))
def attention_family(request):
    """The families with attention heads, for tests of head-only steps (dead heads, Kwon's refinement)."""
    _FAMILY["current"] = request.param
    yield request.param
    _FAMILY["current"] = "bert"


WORDS = ("good great fine bad awful dull film movie plot actor scene story funny boring long short "
         "the a is was and but not very").split()


def write_tiny_folder(path, model_type: str, seed: int = 0, vocab_words: bool = False, **dims):
    """A tiny classifier saved as a Hugging Face folder, with a WordPiece tokenizer over WORDS.
    vocab_words: build the tokenizer from the vocabulary itself (transformers 5 reads only the
    special tokens from `vocab_file`, so without it every word is [UNK])."""
    from transformers import BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = path / "vocab.txt"
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    vocab.write_text("\n".join(words) + "\n")
    tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}) if vocab_words else \
        BertTokenizerFast(vocab_file=str(vocab))
    model = tiny_model(model_type, seed, **dims)
    model.config.pad_token_id = 0
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def write_tiny_csv(path, n=60, labels=3, seed=0):
    import csv
    import random

    rng = random.Random(seed)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "label"])
        for _ in range(n):
            w.writerow([" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))), rng.randrange(labels)])
    return path


@pytest.fixture(scope="session")
def tiny_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    return {f: write_tiny_folder(root / f, f) for f in families(installed=True)}


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory):
    return write_tiny_csv(tmp_path_factory.mktemp("data") / "tiny.csv")
