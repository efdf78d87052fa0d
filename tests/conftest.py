"""Shared fixtures: everything shrunk so a test trains for real in seconds on a CPU."""

import os

import pytest

# Two cores here: more torch threads than cores only adds contention.
os.environ.setdefault("OMP_NUM_THREADS", "2")

# The one shrink used by every test that trains: real Fashion-MNIST images, but a
# small slice of them, one epoch, the smallest real ResNet, the CPU.
TINY = {
    "dataset": "fashion_mnist_subset",
    "train_subset": 512,
    "val_subset": 256,
    "model": "resnet20",
    "epochs": 1,
    "batch_size": 64,
    "device": "cpu",
    "seed": 0,
}


@pytest.fixture
def tiny():
    """A flat config dict (the form a search space produces) for a seconds-long real run."""
    return dict(TINY)
