"""The recipes (spaces/recipes/) end to end: a real smoke search on a small generated data set of
each recipe's shape, and the teacher each one trains.

The smoke searches are real Ray Tune + MLflow runs of the recipe's training setup (model,
optimizer, schedule, per-stage LRs, augmentation), shrunk where a CPU needs it: bf16 off
(slow without bf16 instructions), and small images and few of them.
"""

import os
import subprocess
import sys

import pytest
import torch
import torchvision
from mlflow.tracking import MlflowClient
from PIL import Image

from search.bench.synthetic_cub import write_cub_folder
from search.tools.teacher import teacher_argv
from spaces import list_recipes
from trainable.config import CHECKPOINT_FILE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def image_folder(root, classes: int, per_class: int = 2, size: int = 32):
    """train/ and val/ folders of ``classes`` classes, ``per_class`` small PNGs each (CIFAR's shape)."""
    gen = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class_{c:03d}"
            folder.mkdir(parents=True)
            for k in range(per_class):
                pixels = torch.randint(0, 256, (size, size, 3), generator=gen, dtype=torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{k}.png")
    return root


def smoke(tmp_path, recipe: str, data_dir, *sets: str):
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db", "OMP_NUM_THREADS": "1",
           "TRICKTUNE_FOLDER_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    # No subset is set: the smoke fits its own to a data set smaller than its slice, as for a user.
    args = [arg for kv in ("amp=off", *sets) for arg in ("--set", kv)]
    out = subprocess.run([sys.executable, "-m", "search", "mixup_alpha", "--recipe", recipe, "--data-dir",
                          str(data_dir), "--smoke", "--storage", str(tmp_path / "ray"),
                          "--confirm-seeds", "0", *args],  # the confirmation stage: tests/test_confirm.py
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert f"on recipe {recipe}" in out.stdout and "best single run" in out.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("tricktune/mixup_alpha").experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("tricktune_role") == "search"]
    assert parent.data.params["recipe"] == recipe and parent.data.tags["recipe"] == recipe
    trials = [r for r in runs if "trial_id" in r.data.tags]
    # Every trial ran (ASHA may stop one at the smoke's first rung: which, depends on which
    # trial reaches it first); the baseline always runs to the end.
    assert trials and all(r.info.status == "FINISHED" or r.data.tags.get("outcome") == "stopped_early"
                          for r in trials)
    assert [r.info.status for r in trials if r.data.tags["is_baseline"] == "true"] == ["FINISHED"]
    return trials[0].data.params


@pytest.mark.slow
def test_cub200_resnet50_fine_tunes_local_pretrained_weights_on_a_cub_folder(tmp_path):
    weights = tmp_path / "resnet50_imagenet.pth"  # stands in for IMAGENET1K_V1, which needs a network
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    cub = write_cub_folder(tmp_path / "CUB_200_2011", classes=4, train_per_class=4, test_per_class=2,
                           size=(80, 60))
    params = smoke(tmp_path, "cub200_resnet50", cub, f"pretrained={weights}", "image_size=64", "stem=imagenet")
    assert (params["model"], params["optimizer"], params["schedule"]) == ("resnet50", "adamw", "onecycle")
    assert params["stage_lr_divisors"] == "[10.0, 8.0, 6.0, 4.0, 2.0, 2.0]" and params["rotation_degrees"] == "5.0"
    assert params["dataset"] == "cub200" and params["crop"] == "random_resized"


@pytest.mark.slow
@pytest.mark.parametrize("recipe, classes", [("cifar100_resnet50", 100), ("cifar10_resnet18", 10)])
def test_cifar_recipes_train_on_a_32px_folder_of_their_class_count(tmp_path, recipe, classes):
    # CIFAR's own files must match torchvision's md5 sums, so the generated stand-in is an image
    # folder of the same shape (32 px, 3 channels, 10 or 100 classes); the CIFAR readers are
    # tested through local files in tests/test_data.py.
    folder = image_folder(tmp_path / "data", classes)
    params = smoke(tmp_path, recipe, folder, "dataset=imagefolder", "train_subset=20", "val_subset=20")
    assert params["model"] == recipe.rsplit("_", 1)[1] and params["image_size"] == "0"  # 0: the images' own
    # ...which the trials chose from the folder: the 32 px of its images, as their checkpoints record.
    states = list((tmp_path / "ray").rglob(CHECKPOINT_FILE))
    assert states and {torch.load(p, weights_only=False)["data"]["image_size"] for p in states} == {32}
    if recipe == "cifar100_resnet50":  # its 5 warmup epochs of 200, shrunk with --smoke's 2 epochs
        assert (params["warmup_epochs"], params["augment"]) == ("0.05", "autoaugment")
    assert params["batch_size"] == "64"  # smoke's; the recipe's own is in its file


def test_each_recipe_names_a_teacher_and_make_teacher_trains_it_on_the_recipe():
    for name in list_recipes():
        argv = teacher_argv(name, "/data" if name.startswith("cub") else None, None)
        values = dict(argv[i + 1].split("=", 1) for i in range(0, len(argv), 2) if argv[i] == "--set")
        assert argv[argv.index("--save-weights") + 1].endswith(f"teachers/{name}.pt")
        assert values["model"] != "resnet20" or name != "fashion_mnist_resnet20"
    cub = dict(a.split("=", 1) for a in teacher_argv("cub200_resnet50", "/data", None) if "=" in a)
    assert cub["model"] == "resnet152" and cub["pretrained"] == "IMAGENET1K_V1" and cub["data_dir"] == "/data"
    assert cub["stage_lr_divisors"] == "(10.0, 8.0, 6.0, 4.0, 2.0, 2.0)"  # the recipe's, under the teacher's
