"""Is the channel attention class-specific? In the spirit of the SE paper's excitation plots (Hu et al., CVPR 2018,
Fig. 6): early stages excite the same channels for every class, late ones specialise.

Per stage: the mean channel-attention vector of each class, and one number, the separation
    ratio = mean distance between two class means / mean distance of a vector to its own class mean.
Class means drawn from the same pool of vectors still differ by chance (more so with few images per class), so
the same ratio with the labels shuffled (mean over `permutations` shuffles, fixed seed) is reported beside it:
a ratio near its chance value means the attention does not depend on the class.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Specificity:
    ratio: float          # nan when fewer than 2 classes have 2 or more images, or no spread within classes
    chance: float         # the ratio with shuffled labels (mean over the shuffles)
    classes: np.ndarray   # (K',) the labels present, sorted
    means: np.ndarray     # (K', C) the mean vector of each class


def class_means(vectors: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(classes present (K',), their mean vectors (K', C))."""
    labels = np.asarray(labels)
    classes = np.unique(labels)
    return classes, np.stack([vectors[labels == k].mean(axis=0) for k in classes])


def separation(vectors: np.ndarray, labels: np.ndarray) -> float:
    """Mean pairwise distance between class means over the mean distance of each vector to its class mean."""
    vectors = np.asarray(vectors, dtype=np.float64)
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    keep = np.isin(labels, classes[counts >= 2])
    if len(classes[counts >= 2]) < 2:
        return float("nan")
    vectors, labels = vectors[keep], labels[keep]
    classes, means = class_means(vectors, labels)
    index = np.searchsorted(classes, labels)
    within = np.linalg.norm(vectors - means[index], axis=1).mean()
    diff = means[:, None, :] - means[None, :, :]
    k = len(classes)
    between = np.linalg.norm(diff, axis=-1)[np.triu_indices(k, 1)].mean()
    return float(between / within) if within > 0 else float("nan")


def class_specificity(vectors: np.ndarray, labels: np.ndarray, *, seed: int = 0,
                      permutations: int = 20) -> Specificity:
    """The separation ratio of channel-attention `vectors` (N, C) under `labels` (N,), its chance value with
    shuffled labels, and the per-class means. Images with an unknown label (< 0) are left out."""
    vectors = np.asarray(vectors, dtype=np.float64)
    labels = np.asarray(labels)
    known = labels >= 0
    vectors, labels = vectors[known], labels[known]
    if len(labels) == 0:
        return Specificity(float("nan"), float("nan"), np.zeros(0, dtype=np.int64), np.zeros((0, 0)))
    classes, means = class_means(vectors, labels)
    ratio = separation(vectors, labels)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xC4A2]))
    shuffled = [separation(vectors, rng.permutation(labels)) for _ in range(permutations)]
    chance = float(np.mean(shuffled)) if shuffled and not np.isnan(ratio) else float("nan")
    return Specificity(ratio, chance, classes, means)
