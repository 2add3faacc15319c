"""What a model's output means, declared by its family (`Adapter.task`), so that the generic code
(the KD term of the importance scores, evaluation, parity, engine scoring) never branches on a
family or a task:

- `rows(logits)`: the output as rows of class logits [N, classes]: the distributions the KD term
  compares. A classifier's [B, classes] is already that; a segmenter's [B, classes, H, W] gives
  one row per pixel, batch-major (so stacked copies of a batch stay contiguous).
- `evaluate(model, batches, desc)`: the task's metric with a 95% interval, as a dict whose
  "accuracy" entry is the headline number every report reads (accuracy for classifiers, mIoU for
  segmenters; "metric" names it) and whose "ci95" is its half-width.
- `score(predictions, labels, num_labels)`: the same from predictions already made (an engine's).
- `encode_labels(examples, config, where, label_map)`: the data's labels as the model's ids.

Predictions are the argmax over axis 1 in both cases ([B, C] and [B, C, H, W]).

Segmentation metrics: per-class IoU = TP / (TP + FP + FN) over every test pixel (pixels labelled
-100 count nowhere), mIoU = their mean over the classes present in the labels or predictions;
pixel accuracy = correct / labelled pixels. Intervals: 1.96 × the standard deviation of the
metric over a seeded bootstrap of the test images (pixels of one image are not independent, so
a per-pixel binomial interval would be far too narrow).
"""
from __future__ import annotations

import math

import torch
from tqdm.auto import tqdm

BOOTSTRAP = 1000
IGNORE_INDEX = -100


class Classification:
    name = "classification"
    metric = "accuracy"

    def rows(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def evaluate(self, model, batches, desc: str = "evaluate") -> dict:
        from .evaluate import accuracy

        return accuracy(model, batches, desc)

    def score(self, pred, labels, num_labels: int) -> dict:
        pred, labels = torch.as_tensor(pred), torch.as_tensor(labels)
        p, n = float((pred == labels).float().mean()), len(labels)
        return {"accuracy": p, "ci95": 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1)), "n": n}

    def encode_labels(self, examples, config, where: str, label_map=None):
        from .labels import encode_labels

        label2id = {str(k): int(v) for k, v in (config.label2id or {}).items()}
        return encode_labels(examples, label2id, config.num_labels, where, label_map)


class Segmentation(Classification):
    name = "segmentation"
    metric = "mIoU"

    def rows(self, logits):
        return logits.movedim(1, -1).reshape(-1, logits.shape[1])

    def evaluate(self, model, batches, desc: str = "evaluate") -> dict:
        return metrics(self.confusions(model, batches, desc))

    @torch.no_grad()
    def confusions(self, model, batches, desc: str = "evaluate") -> torch.Tensor:
        """[images, classes, classes] counts: what `metrics` and `paired_difference` read."""
        p = next(model.parameters(), None)
        dev = p.device if p is not None else torch.device("cpu")
        conf = []
        for b in tqdm(batches, desc=desc, unit="batch", leave=False):
            # one batch at a time on the model's device, counted on the CPU (as optin.evaluate)
            logits = model(**{k: v.to(dev) for k, v in b.items() if k != "labels"}).logits
            conf.append(confusion(logits.argmax(1).cpu(), b["labels"].cpu(), logits.shape[1]))
        return torch.cat(conf)

    def score(self, pred, labels, num_labels):
        return metrics(confusion(torch.as_tensor(pred), torch.as_tensor(labels), num_labels))

    def encode_labels(self, examples, config, where, label_map=None):
        from .errors import BadInput
        from .segdata import check_label_maps

        if label_map:
            raise BadInput("--label-map applies to classification labels; a segmentation label map holds class ids "
                           "per pixel (0..classes-1, 255 = ignore)")
        return check_label_maps(examples, config.num_labels, where)


def confusion(pred: torch.Tensor, labels: torch.Tensor, num_labels: int) -> torch.Tensor:
    """[images, classes, classes] confusion counts (row: label, column: prediction) per image."""
    pred, labels = pred.reshape(len(pred), -1).long(), labels.reshape(len(labels), -1).long()
    keep = labels != IGNORE_INDEX
    idx = labels.clamp(min=0) * num_labels + pred
    out = torch.zeros(len(pred), num_labels * num_labels, dtype=torch.long)
    out.scatter_add_(1, idx, keep.long())
    return out.view(-1, num_labels, num_labels)


def _miou(conf: torch.Tensor) -> tuple[float, torch.Tensor]:
    """mIoU of summed [C, C] counts (classes absent from labels and predictions left out)."""
    tp = conf.diagonal().double()
    union = conf.sum(0).double() + conf.sum(1).double() - tp
    present = union > 0
    iou = torch.where(present, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    return float(iou[present].mean()) if present.any() else 0.0, iou


def _pixel_accuracy(conf: torch.Tensor) -> float:
    return float(conf.diagonal().sum() / conf.sum().clamp(min=1))


def metrics(conf: torch.Tensor, seed: int = 0, resamples: int = BOOTSTRAP) -> dict:
    """mIoU and pixel accuracy from per-image confusion counts, with bootstrap intervals."""
    total = conf.sum(0)
    miou, iou = _miou(total)
    pa = _pixel_accuracy(total)
    g = torch.Generator().manual_seed(seed)
    n = len(conf)
    boot_m, boot_p = [], []
    for _ in range(resamples if n > 1 else 0):
        s = conf[torch.randint(0, n, (n,), generator=g)].sum(0)
        boot_m.append(_miou(s)[0])
        boot_p.append(_pixel_accuracy(s))
    sd = (lambda v: float(torch.tensor(v).std()) if len(v) > 1 else 0.0)
    return {"accuracy": miou, "ci95": 1.96 * sd(boot_m), "n": n, "metric": "mIoU",
            "pixel_accuracy": pa, "pixel_accuracy_ci95": 1.96 * sd(boot_p),
            "iou": [None if v != v else float(v) for v in iou.tolist()], "pixels": int(total.sum()),
            "interval": f"1.96 x sd over {resamples} bootstrap resamples of the {n} test images"}


def paired_difference(a: torch.Tensor, b: torch.Tensor, seed: int = 0, resamples: int = BOOTSTRAP) -> dict:
    """mIoU(a) − mIoU(b) for two models' per-image confusions on the same images, with a paired
    bootstrap (the same resampled images for both): 95% interval and two-sided p (twice the
    share of resamples on the other side of zero), the segmentation counterpart of McNemar."""
    if a.shape != b.shape:
        raise ValueError(f"paired_difference needs the same images: {tuple(a.shape)} vs {tuple(b.shape)}")
    g = torch.Generator().manual_seed(seed)
    n = len(a)
    d = torch.tensor([_miou(a[i].sum(0))[0] - _miou(b[i].sum(0))[0]
                      for i in (torch.randint(0, n, (n,), generator=g) for _ in range(resamples))])
    diff = _miou(a.sum(0))[0] - _miou(b.sum(0))[0]
    side = float((d <= 0).double().mean()) if diff > 0 else float((d >= 0).double().mean())
    return {"diff": diff, "ci95": [float(d.quantile(0.025)), float(d.quantile(0.975))],
            "p": min(1.0, 2 * side), "resamples": resamples}


CLASSIFICATION = Classification()
SEGMENTATION = Segmentation()
