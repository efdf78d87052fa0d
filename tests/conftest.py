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


@pytest.fixture(autouse=True, scope="session")
def folder_cache_dir(tmp_path_factory):
    """Image-folder caches (trainable/folder_cache.py) go to a temporary folder, never the
    user's ~/.cache/tricktune/folders; set in the environment so subprocesses and Ray
    workers started by tests use it too."""
    path = tmp_path_factory.mktemp("folder-cache")
    os.environ["TRICKTUNE_FOLDER_CACHE"] = str(path)
    return path


@pytest.fixture
def tiny():
    """A flat config dict (the form a search space produces) for a seconds-long real run."""
    return dict(TINY)


def tiny_space_yaml(question: str, params: dict, *, samples: int, epochs: int, train_subset: int = 256,
                    fixed: dict | None = None, grace_period: int = 1, max_concurrent: int = 2,
                    cpus_per_trial: float = 1, scheduler: str = "asha", confirm_seeds: int = 0,
                    **sections) -> str:
    """The text of a seconds-per-trial search space for the end-to-end tests (search, report,
    faults): the embedded images shrunk as in TINY, the rest as a space file writes it.
    ``sections``: further top-level keys, e.g. ``baseline`` or ``variants``. No confirmation
    stage unless asked for (``confirm_seeds``, or ``--confirm-seeds`` on the command line):
    tests/test_confirm.py tests it; the others test the search phase."""
    import yaml

    doc = {"metric": "val_top1", "mode": "max",
           "fixed": {"train_subset": train_subset, "val_subset": 128, "batch_size": 64, **(fixed or {})},
           "params": params, **sections,
           "budget": {"num_samples": samples, "max_epochs": epochs, "grace_period": grace_period,
                      "reduction_factor": 3, "max_concurrent": max_concurrent, "cpus_per_trial": cpus_per_trial,
                      "confirm_seeds": confirm_seeds},
           "scheduler": scheduler, "seed": 0}
    return f"# Question: {question}\n# Run: python -m search <this file>\n" + yaml.safe_dump(doc, sort_keys=False)
