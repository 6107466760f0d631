"""Classification metrics: top-k correct counts, a running meter, per-class accuracy and the confusion matrix."""
from __future__ import annotations

import torch
import torch.distributed as dist


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
