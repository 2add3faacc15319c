"""Semantic-segmentation data: `fmnist-seg` (made offline from the Fashion-MNIST images),
`segfolder:DIR` (images and per-pixel label PNGs) and `hf:` segmentation datasets, and the
processor that turns an image and its label map into `pixel_values` and `labels` [B, H, W].

An example is (image, None, label map): the image as optin.images has it (a uint8 array or a
path), the label map a uint8/int array of class ids (H×W) or a path to a PNG of them. Pixels
labelled IGNORE (255) count in no loss and no metric; in batches they become -100, the
ignore_index of torch's cross_entropy, so a per-pixel loss needs no special case.

fmnist-seg (fixed, documented, seeded): each canvas is FMNIST_SEG["canvas"]² black pixels on
which 2–4 garments (28×28 each) are pasted in turn at uniform positions, a later garment over
an earlier one; a garment's pixels are those of intensity ≥ FMNIST_SEG["threshold"] (its
fainter edge pixels are left out of both the image and the label, so they always agree). Each
pixel is labelled with its garment's class + 1, background 0 (11 classes). Garments come from
the Fashion-MNIST split of the same name (optin.images.fashion_mnist: train 59,488, calib 512,
the official 10,000 test images), drawn with numpy's default_rng([seed, split number]), so
every split is reproducible on its own and never shares a garment image with another split.
"""
from __future__ import annotations

import os

import numpy as np

from .errors import BadData
from .examples import POOL, TextDataset
from .files import reason
from .images import FMNIST_LABELS, IMAGE_SUFFIXES, ImageProcessor

IGNORE = 255           # label value of pixels that count nowhere (segfolder / hf label maps)
TORCH_IGNORE = -100    # what IGNORE becomes in `labels` tensors (torch cross_entropy's ignore_index)
FMNIST_SEG = dict(canvas=64, garments=(2, 4), threshold=10, seed=0,
                  sizes={"train": 20000, "calib": 512, "test": 2000})
FMNIST_SEG_LABELS = ["background", *FMNIST_LABELS]
SPLIT_NUMBER = {"train": 0, "calib": 1, "test": 2}  # the second seed word of each split's generator
META = {"modality": "image", "task": "segmentation"}


def compose(images: np.ndarray, classes: np.ndarray, n: int, rng: np.random.Generator, canvas: int = 64,
            garments=(2, 4), threshold: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """n canvases [n, canvas, canvas] uint8 and their label maps (class + 1, background 0),
    garments drawn from `images` [N, h, w] with `rng` (see the module docstring)."""
    h, w = images.shape[1:]
    x = np.zeros((n, canvas, canvas), np.uint8)
    y = np.zeros((n, canvas, canvas), np.uint8)
    for i in range(n):
        k = int(rng.integers(garments[0], garments[1] + 1))
        picks = rng.integers(0, len(images), k)
        tops = rng.integers(0, canvas - h + 1, k)
        lefts = rng.integers(0, canvas - w + 1, k)
        for g, t, left in zip(picks, tops, lefts):
            img = images[g]
            on = img >= threshold
            x[i, t:t + h, left:left + w][on] = img[on]
            y[i, t:t + h, left:left + w][on] = classes[g] + 1
    return x, y


def fmnist_seg(root: str | None = None, splits=("calib", "test"), sizes: dict | None = None) -> TextDataset:
    """fmnist-seg: the named splits (calib, test, and train for the zoo, which only it reads) of
    (canvas, None, label map) examples; sizes overrides FMNIST_SEG["sizes"] per split."""
    from .images import fashion_mnist

    src = fashion_mnist(root)
    cfg = FMNIST_SEG
    sizes = {**cfg["sizes"], **(sizes or {})}
    out = {}
    for name in splits:
        n = sizes[name]
        pool = src.split(name)
        imgs = np.stack([e[0] for e in pool])
        cls = np.array([int(e[2]) for e in pool])
        rng = np.random.default_rng([cfg["seed"], SPLIT_NUMBER[name]])
        x, y = compose(imgs, cls, n, rng, cfg["canvas"], cfg["garments"], cfg["threshold"])
        out[name] = [(x[i], None, y[i]) for i in range(n)]
    return TextDataset("fmnist-seg", out, label_names=FMNIST_SEG_LABELS, meta=dict(META))


# --- segfolder:DIR -----------------------------------------------------------------------------
def read_segfolder(root: str) -> TextDataset:
    """`segfolder:DIR`: DIR/images/NAME.png|jpg and DIR/labels/NAME.png (one class id per pixel,
    255 = ignore), one pool; DIR/classes.txt (one name a line, id order) names the classes."""
    img_dir, lab_dir = os.path.join(root, "images"), os.path.join(root, "labels")
    if not os.path.isdir(img_dir) or not os.path.isdir(lab_dir):
        raise BadData(f"segmentation folder {root!r} needs images/ and labels/ sub-folders "
                      "(DIR/images/NAME.png and DIR/labels/NAME.png, class ids per pixel)")
    labels = {os.path.splitext(f)[0]: os.path.join(lab_dir, f) for f in os.listdir(lab_dir)
              if f.lower().endswith(".png")}
    images = sorted(f for f in os.listdir(img_dir) if f.lower().endswith(IMAGE_SUFFIXES))
    if not images:
        raise BadData(f"segmentation folder {root!r}: images/ holds no PNG/JPEG images")
    missing = [f for f in images if os.path.splitext(f)[0] not in labels]
    if missing:
        raise BadData(f"segmentation folder {root!r}: {len(missing)} image(s) without a label map, e.g. "
                      f"images/{missing[0]} has no labels/{os.path.splitext(missing[0])[0]}.png")
    names_file = os.path.join(root, "classes.txt")
    names = None
    if os.path.isfile(names_file):
        names = [n.strip() for n in open(names_file, encoding="utf-8") if n.strip()]
    examples = [(os.path.join(img_dir, f), None, labels[os.path.splitext(f)[0]]) for f in images]
    return TextDataset(f"segfolder:{root}", {POOL: examples}, label_names=names, meta=dict(META))


# --- hf: segmentation datasets -------------------------------------------------------------------
LABEL_MAP_COLUMNS = ("label", "labels", "annotation", "semantic_map", "segmentation", "mask", "label_map",
                     "gtFine")


def hf_label_column(features, image_col: str) -> str | None:
    """The label-map column of an `hf:` dataset: another Image column, preferring the usual names;
    None when the dataset has one image column only (a classification dataset)."""
    images = [c for c, f in features.items() if type(f).__name__ == "Image" and c != image_col]
    for c in LABEL_MAP_COLUMNS:
        if c in images:
            return c
    return images[0] if images else None


def seg_records(records, image_col: str, label_col: str, where: str):
    """Rows of an `hf:` segmentation dataset → (image array, None, label-map array) examples."""
    if not records:
        raise BadData(f"{where}: the dataset is empty; give at least one image with its label map")
    out = []
    for i, r in enumerate(records):
        if r.get(image_col) is None or r.get(label_col) is None:
            raise BadData(f"{where}: row {i + 1} lacks {image_col!r} or {label_col!r}; every row needs an image "
                          "and its label map")
        out.append((np.asarray(r[image_col]), None, np.asarray(r[label_col])))
    return out, {"image": image_col, "pair": None, "label": label_col}


# --- labels --------------------------------------------------------------------------------------
def read_label_map(lab, where: str) -> np.ndarray:
    """A label map (array, or a PNG path) as an [H, W] integer array."""
    if isinstance(lab, str):
        from PIL import Image

        try:
            im = Image.open(lab)
            lab = np.asarray(im if im.mode in ("L", "P", "I", "I;16") else im.convert("L"))
        except (OSError, ValueError) as e:
            raise BadData(f"{where}: cannot read label map {lab}: {reason(e)}; replace or remove it") from e
    lab = np.asarray(lab)
    if lab.ndim == 3 and lab.shape[2] == 1:
        lab = lab[..., 0]
    if lab.ndim != 2 or not np.issubdtype(lab.dtype, np.integer):
        raise BadData(f"{where}: a label map must be one integer class id per pixel (H×W), got "
                      f"{lab.dtype} of shape {lab.shape}; save label maps as single-channel PNGs")
    return lab


def check_label_maps(examples, num_labels: int, where: str) -> list:
    """Examples whose label maps hold only the model's class ids (0..num_labels − 1) or IGNORE;
    BadData naming the first bad example otherwise. Label maps stay as given (arrays or paths)
    and are read again when batched."""
    for i, (img, _, lab) in enumerate(examples):
        if isinstance(lab, (int, np.integer, str)) and not (isinstance(lab, str) and os.path.isfile(lab)):
            raise BadData(f"{where}: example {i + 1} has the class label {lab!r}, not a label map; a segmentation "
                          "model needs one class id per pixel (fmnist-seg, segfolder:DIR, hf: with a label-map column)")
        lab = read_label_map(lab, where)
        size = _image_size(img, where)
        if size is not None and size != lab.shape:
            raise BadData(f"{where}: example {i + 1}'s label map is {lab.shape[0]}×{lab.shape[1]} but its image is "
                          f"{size[0]}×{size[1]}; a label map must have its image's height and width")
        ids = np.unique(lab)
        bad = ids[(ids >= num_labels) & (ids != IGNORE)]
        if len(bad):
            raise BadData(f"{where}: example {i + 1}'s label map has class id {int(bad[0])} but the model has "
                          f"{num_labels} classes (0..{num_labels - 1}; {IGNORE} = ignore)")
    return list(examples)


def _image_size(img, where: str) -> tuple[int, int] | None:
    """(height, width) of an example's image (a path is opened, not decoded); None if unknown."""
    if isinstance(img, str):
        from PIL import Image

        try:
            with Image.open(img) as im:
                return im.size[1], im.size[0]
        except (OSError, ValueError) as e:
            raise BadData(f"{where}: cannot read image {img}: {reason(e)}; replace or remove it") from e
    shape = getattr(img, "shape", None)
    return (int(shape[0]), int(shape[1])) if shape is not None and len(shape) >= 2 else None


class SegProcessor(ImageProcessor):
    """ImageProcessor for segmentation: images resized bilinearly as for classification, label
    maps by nearest neighbour to the same size, IGNORE → -100 (`encode_labels`, which
    optin.data.make_batches calls for the `labels` entry)."""

    def encode_labels(self, examples):
        import torch

        out = []
        for i, e in enumerate(examples):
            lab = read_label_map(e[2], "label map")
            if lab.shape != (self.size, self.size):
                from PIL import Image

                lab = np.asarray(Image.fromarray(lab.astype(np.int32)).resize((self.size, self.size),
                                                                            Image.NEAREST))
            t = torch.from_numpy(lab.astype(np.int64))
            out.append(torch.where(t == IGNORE, TORCH_IGNORE, t))
        return torch.stack(out)
