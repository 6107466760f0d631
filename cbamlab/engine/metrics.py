"""Classification metrics: top-k correct counts, a running meter, per-class accuracy and the confusion matrix;
and the spread of CBAM's spatial maps, which says whether the spatial gate does anything."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from ..models.attention import SpatialGate, keeping_maps

MAP_IMAGES = 512  # the images spatial_map_spread reads: the first of the evaluation split, in its fixed order


def topk_correct(logits: torch.Tensor, target: torch.Tensor, ks=(1, 5)) -> list[int]:
    """Number of samples whose target is among the k highest logits, per k (k capped at the class count)."""
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices  # (B, maxk)
    hit = pred.eq(target.unsqueeze(1))       # (B, maxk)
    return [int(hit[:, :min(k, maxk)].any(dim=1).sum()) for k in ks]


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts; rows are true classes, columns predictions."""
    idx = target.long().cpu() * num_classes + pred.long().cpu()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(cm: torch.Tensor) -> list[float | None]:
    """Recall of each class from a confusion matrix; None for a class with no samples."""
    total = cm.sum(dim=1)
    return [None if int(n) == 0 else float(cm[i, i]) / float(n) for i, n in enumerate(total)]


class Meter:
    """Sums loss and top-1/top-5 hits over batches; optionally the confusion matrix."""

    def __init__(self, num_classes: int | None = None):
        self.n = 0
        self.loss_sum = 0.0
        self.top1 = 0
        self.top5 = 0
        self.cm = torch.zeros(num_classes, num_classes, dtype=torch.int64) if num_classes else None

    def update(self, logits: torch.Tensor, target: torch.Tensor, loss_sum: float) -> None:
        c1, c5 = topk_correct(logits, target, (1, 5))
        self.n += int(target.shape[0])
        self.loss_sum += float(loss_sum)
        self.top1 += c1
        self.top5 += c5
        if self.cm is not None:
            self.cm += confusion_matrix(logits.argmax(dim=1), target, self.cm.shape[0])

    def all_reduce(self, device: torch.device) -> "Meter":
        """Sum every rank's counts (torch.distributed, on `device`); each rank then holds the totals, which are
        the counts of one process over the whole data. Loss sums travel in float64."""
        t = torch.tensor([self.n, self.top1, self.top5, self.loss_sum], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        n, top1, top5, self.loss_sum = t.tolist()
        self.n, self.top1, self.top5 = int(n), int(top1), int(top5)
        if self.cm is not None:
            cm = self.cm.to(device)
            dist.all_reduce(cm)
            self.cm = cm.cpu()
        return self

    def result(self) -> dict:
        n = max(self.n, 1)
        out = {"loss": self.loss_sum / n, "top1": self.top1 / n, "top5": self.top5 / n, "n": self.n}
        if self.cm is not None:
            out["confusion_matrix"] = self.cm.tolist()
            out["per_class_accuracy"] = per_class_accuracy(self.cm)
        return out


@torch.no_grad()
def spatial_map_spread(model: nn.Module, loader, max_images: int = MAP_IMAGES) -> dict | None:
    """{stage: {"p05", "p50", "p95", "range"}} of the spatial maps Ms (values in (0, 1)) of every CBAM in each
    stage over the first `max_images` images of `loader`: the percentiles of all their values, and "range" the
    mean over maps of max - min. A gate whose map is nearly constant scales every position alike. None for a
    model without spatial gates (plain, SE, channel-only CBAM) or without `stage_names()`."""
    if not hasattr(model, "stage_names") or not any(isinstance(m, SpatialGate) for m in model.modules()):
        return None
    was_training = model.training
    model.eval()
    stages = {name: [g for g in getattr(model, name).modules() if isinstance(g, SpatialGate)]
              for name in model.stage_names()}
    values: dict[str, list[torch.Tensor]] = {n: [] for n, gates in stages.items() if gates}
    ranges: dict[str, list[torch.Tensor]] = {n: [] for n in values}
    seen = 0
    try:
        with keeping_maps(model):
            for x, _ in loader:
                x = x[: max_images - seen]
                model(x)
                for name in values:
                    for g in stages[name]:
                        maps = g.last_map.float().flatten(1)  # (B, h * w)
                        values[name].append(maps.flatten())
                        ranges[name].append(maps.amax(dim=1) - maps.amin(dim=1))
                seen += x.shape[0]
                if seen >= max_images:
                    break
    finally:
        model.train(was_training)
    out = {}
    for name in values:
        v = torch.cat(values[name])
        q = torch.quantile(v[torch.randperm(v.numel(), generator=torch.Generator().manual_seed(0))[:1 << 24]]
                           if v.numel() > 1 << 24 else v, torch.tensor([0.05, 0.5, 0.95]))
        out[name] = {"p05": round(float(q[0]), 4), "p50": round(float(q[1]), 4), "p95": round(float(q[2]), 4),
                     "range": round(float(torch.cat(ranges[name]).mean()), 4), "images": seen}
    return out
