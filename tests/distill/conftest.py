"""Stage-wise distillation tests: a resnet_tiny original quickly trained on digits at 16x16, its stage
features computed once per session (tiny, seeded, on the CPU with one thread)."""

from __future__ import annotations

import pytest
import torch

from pdenas.data import load_dataset
from pdenas.distill import StageRecipe, stage_features
from pdenas.train import TrainRecipe, train_model
from pdenas.zoo import create_model

IMAGES, VAL_IMAGES = 256, 64
RECIPE = StageRecipe(epochs=4, batch_size=16, lr=1e-2, precision="fp32", seed=0)  # fp32: the same figures on every CPU


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs with one thread (the shared ``one_thread`` fixture)."""


@pytest.fixture(scope="session")
def session_one_thread():
    """One thread for the session fixtures too (they are set up before the per-test ``one_thread``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def digits16():
    return load_dataset("digits", seed=0, val_fraction=0.2, image_size=16)


@pytest.fixture(scope="session")
def original(digits16, session_one_thread):
    """resnet_tiny trained 2 epochs on digits (about 70 % validation accuracy): a real, trained original."""
    torch.manual_seed(0)
    model = create_model("resnet_tiny", in_channels=1)
    train_model(model, digits16, TrainRecipe(epochs=2, batch_size=64, lr=0.1, augment=False), seed=0, device="cpu")
    return model.eval()


@pytest.fixture(scope="session")
def features(original, digits16, tmp_path_factory, session_one_thread):
    folder = tmp_path_factory.mktemp("features")
    return stage_features(original, digits16, folder, images=IMAGES, val_images=VAL_IMAGES, batch_size=64, device="cpu")
