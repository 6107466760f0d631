"""scikit-learn's embedded handwritten digits (1,797 real 8x8 images; UCI optdigits test set): the zero-set-up
default. A fixed stratified 80/20 train/test split, independent of the run's seed."""
from __future__ import annotations

import numpy as np
import torch

from .stats import stratified_split
from .types import TensorSplit

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def read(source, name: str = "digits", *, include_test: bool = True):
    """(train, test or None, classes); `source` is locate's description (nothing to open). Values 0..16 are
    scaled to uint8 0..255."""
    from sklearn.datasets import load_digits  # heavy; only this dataset needs it

    d = load_digits()
    images = np.rint(d.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)  # (N, 8, 8)
    images = torch.from_numpy(images).unsqueeze(1)  # (N, 1, 8, 8)
    labels = torch.from_numpy(d.target.astype(np.int64))
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    full = TensorSplit(images, labels)
    test = full.subset(test_idx) if include_test else None
    return full.subset(train_idx), test, [str(i) for i in range(10)]
