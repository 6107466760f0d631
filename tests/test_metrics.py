"""Top-1/top-5, per-class accuracy and the confusion matrix against hand-computed values."""
import torch

from cbamlab.engine.metrics import Meter, confusion_matrix, per_class_accuracy, topk_correct


def test_topk_correct():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1], [0.2, 0.3, 0.5], [0.5, 0.3, 0.2]])
    target = torch.tensor([1, 1, 0, 2])
    # sample 0 right; sample 1 second; sample 2 last; sample 3 last
    assert topk_correct(logits, target, (1, 2, 5)) == [1, 2, 4]  # k=5 is capped at 3 classes


def test_confusion_and_per_class():
    pred = torch.tensor([0, 1, 1, 2, 2, 2])
    target = torch.tensor([0, 1, 2, 2, 2, 0])
    cm = confusion_matrix(pred, target, 4)
    assert cm.tolist() == [[1, 0, 1, 0], [0, 1, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]]
    assert per_class_accuracy(cm) == [0.5, 1.0, 2 / 3, None]  # class 3 has no samples


def test_meter_accumulates_over_batches():
    m = Meter(num_classes=3)
    m.update(torch.tensor([[2.0, 1.0, 0.0]]), torch.tensor([0]), loss_sum=0.5)
    m.update(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 3.0]]), torch.tensor([1, 2]), loss_sum=1.0)
    r = m.result()
    assert r["n"] == 3 and abs(r["loss"] - 0.5) < 1e-12
    assert abs(r["top1"] - 2 / 3) < 1e-12 and r["top5"] == 1.0
    assert r["confusion_matrix"] == [[1, 0, 0], [1, 0, 0], [0, 0, 1]]
    assert r["per_class_accuracy"] == [1.0, 0.0, 1.0]
