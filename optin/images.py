"""Image-classification data and preprocessing: Fashion-MNIST (Debian `dataset-fashion-mnist`),
`imagefolder:DIR` (one sub-folder of PNG/JPEG images per class), and the processor that turns
images into `pixel_values`.

Examples are (image, None, label) triples, like the (text, pair, label) triples of optin.data;
the dataset container, the column choice and the calibration/test split live below both, in
optin.examples. An image is a uint8 array (H×W or H×W×C) or a file path (read when batched).

Fashion-MNIST split (fixed, documented): test = the official 10,000 test images; the 60,000
official training images are shuffled with numpy's default_rng(0); calib = the first 512 of
them, train = the other 59,488.
"""
from __future__ import annotations

import gzip
import json
import os
import zlib

import numpy as np

from .errors import BadData
from .examples import LABEL_COLUMNS, POOL, TextDataset, calib_test, pick_column
from .files import read_json, reason

FMNIST_DIR = "/usr/share/datasets/fashion-mnist"
FMNIST_APT = "apt-get install -y dataset-fashion-mnist"
FMNIST_LABELS = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]
FMNIST_SEED = 0
FMNIST_CALIB = 512
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _idx(path: str, offset: int, shape=(-1,)) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as fh:
            return np.frombuffer(fh.read(), dtype=np.uint8, offset=offset).reshape(shape)
    except (OSError, EOFError, zlib.error, ValueError) as e:  # truncated or not gzip: reinstall
        raise BadData(f"{path} is damaged ({reason(e)}); reinstall it: "
                      "sudo apt-get install --reinstall dataset-fashion-mnist") from e


def fashion_mnist(root: str | None = None):
    """Fashion-MNIST from the IDX files of the Debian package (28×28 grayscale, 10 classes)."""
    root = root or os.environ.get("OPTIN_FMNIST_DIR", FMNIST_DIR)
    files = {s: (os.path.join(root, f"{p}-images-idx3-ubyte.gz"), os.path.join(root, f"{p}-labels-idx1-ubyte.gz"))
             for s, p in (("train", "train"), ("test", "t10k"))}
    missing = [f for pair in files.values() for f in pair if not os.path.isfile(f)]
    if missing:
        raise BadData(f"Fashion-MNIST is not installed ({missing[0]} is missing); install it with: "
                      f"sudo {FMNIST_APT}")
    arrays = {}
    for split, (img, lab) in files.items():
        x, y = _idx(img, 16, (-1, 28, 28)), _idx(lab, 8)
        if len(x) != len(y):
            raise BadData(f"{img}: {len(x)} images but {len(y)} labels; reinstall dataset-fashion-mnist")
        arrays[split] = (x, y)
    order = np.random.default_rng(FMNIST_SEED).permutation(len(arrays["train"][0]))
    x, y = arrays["train"]

    def ex(xs, ys, idx):
        return [(xs[i], None, int(ys[i])) for i in idx]

    return TextDataset("fashion-mnist", {"calib": ex(x, y, order[:FMNIST_CALIB]),
                                         "train": ex(x, y, order[FMNIST_CALIB:]),
                                         "test": ex(*arrays["test"], range(len(arrays["test"][0])))},
                       label_names=FMNIST_LABELS, meta={"modality": "image"})


def image_records(records, column: str, where: str, label_column: str | None = None):
    """Rows of a Hugging Face image dataset (`hf:` data) → (image array, None, label) examples,
    and the columns read."""
    if not records:
        raise BadData(f"{where}: the dataset is empty; give at least one labelled image")
    label = pick_column(set(records[0]), LABEL_COLUMNS, "label", where, label_column, "--label-column")
    out = []
    for i, r in enumerate(records):
        if r.get(column) is None or r.get(label) is None:
            raise BadData(f"{where}: row {i + 1} lacks {column!r} or {label!r}; every row needs an image and a label")
        out.append((np.asarray(r[column]), None, r[label]))
    return out, {"image": column, "pair": None, "label": label}


def read_image_folder(root: str) -> TextDataset:
    """`imagefolder:DIR`: DIR/<class name>/*.png|jpg, one pool; labels are the class names (sorted),
    which must be the model's label names (or its label ids, or mapped with --label-map)."""
    if not os.path.isdir(root):
        raise BadData(f"image folder {root!r} does not exist; give imagefolder:DIR with one sub-folder per class")
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    examples = [(os.path.join(root, c, f), None, c) for c in classes
                for f in sorted(os.listdir(os.path.join(root, c))) if f.lower().endswith(IMAGE_SUFFIXES)]
    if not examples:
        raise BadData(f"image folder {root!r} holds no PNG/JPEG images in class sub-folders "
                      f"(DIR/<class>/*.png); found {len(classes)} sub-folders")
    return TextDataset(f"imagefolder:{root}", {POOL: examples}, label_names=classes, meta={"modality": "image"})


def image_folder(root: str, calib: int = 128, seed: int = 0) -> TextDataset:
    """The image folder with a seeded split: calibration first, test after."""
    return calib_test(read_image_folder(root), calib, seed)


class ImageProcessor:
    """Images → normalised `pixel_values` [B, C, H, W] for a model's config (size, channels).

    Reads and writes Hugging Face's preprocessor_config.json (image_mean, image_std, size), so a
    folder stays loadable by ViTImageProcessor. `encode_examples` is what optin.data.make_batches
    calls instead of a tokenizer."""

    FILE = "preprocessor_config.json"

    def __init__(self, size: int, channels: int, mean=None, std=None):
        self.size, self.channels = int(size), int(channels)
        self.mean = np.asarray(mean if mean is not None else [0.5] * channels, dtype=np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std if std is not None else [0.5] * channels, dtype=np.float32).reshape(-1, 1, 1)

    @classmethod
    def for_model(cls, config, path: str | None = None) -> "ImageProcessor":
        size = config.image_size if isinstance(config.image_size, int) else config.image_size[0]
        p = read_json(os.path.join(path, cls.FILE), {}) if path else {}
        return cls(size, config.num_channels, p.get("image_mean"), p.get("image_std"))

    def save_pretrained(self, out_dir: str) -> None:
        with open(os.path.join(out_dir, self.FILE), "w") as fh:
            json.dump({"image_processor_type": "ViTImageProcessor", "do_resize": True, "do_rescale": True,
                       "do_normalize": True, "rescale_factor": 1 / 255, "resample": 2,
                       "size": {"height": self.size, "width": self.size},
                       "image_mean": self.mean.flatten().tolist(), "image_std": self.std.flatten().tolist()},
                      fh, indent=2)

    def _array(self, img) -> np.ndarray:
        """One image → uint8 [C, size, size]."""
        if isinstance(img, np.ndarray) and img.shape[:2] == (self.size, self.size) and (
                (img.ndim == 2 and self.channels == 1) or (img.ndim == 3 and img.shape[2] == self.channels)):
            return img.reshape(self.size, self.size, self.channels).transpose(2, 0, 1)
        from PIL import Image

        try:
            im = Image.open(img) if isinstance(img, str) else Image.fromarray(np.asarray(img))
            im = im.convert("L" if self.channels == 1 else "RGB")
        except (OSError, ValueError) as e:
            raise BadData(f"cannot read image {img if isinstance(img, str) else type(img).__name__}: {reason(e)}; "
                          "replace or remove it") from e
        if im.size != (self.size, self.size):
            im = im.resize((self.size, self.size), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        return a.reshape(self.size, self.size, self.channels).transpose(2, 0, 1)

    def __call__(self, images) -> dict:
        import torch

        x = np.stack([self._array(i) for i in images]).astype(np.float32) / 255.0
        return {"pixel_values": torch.from_numpy((x - self.mean) / self.std)}

    def encode_examples(self, examples, max_length=None) -> dict:
        return self([e[0] for e in examples])
