"""Shared fixtures."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread while a module of small-model tests runs (restored after).

    Tiny tensors gain nothing from a second thread, and on a busy 2-core machine two threads fighting for the
    cores made the forward/backward of small models 20-40x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
