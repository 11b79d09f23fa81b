"""The memory format training uses: channels-last on CUDA by default, never by default on the CPU, where
torch 2.14's oneDNN crashes in a channels-last backward pass (pdenas/_memory_format.py)."""

import subprocess
import sys
import textwrap

import pytest
import torch

from pdenas._memory_format import training_layout, uses_channels_last
from pdenas.train import TrainRecipe, TrainRecipeError
from pdenas.zoo import create_model


@pytest.mark.parametrize(("setting", "device", "expected"), [
    ("auto", "cpu", False), ("auto", "cuda", True), (True, "cpu", True), (False, "cuda", False),
])
def test_auto_means_channels_last_on_cuda_only(setting, device, expected):
    assert uses_channels_last(setting, torch.device(device)) is expected


def test_the_layout_is_undone_when_training_ends():
    model = create_model("resnet_tiny", in_channels=1)
    with training_layout(model, channels_last=True, device=torch.device("cpu")) as memory_format:
        assert memory_format == torch.channels_last
        assert model.layer1[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
        assert not model.layer1[0].conv1.weight.is_contiguous()
    assert all(p.is_contiguous() for p in model.parameters())


def test_a_recipe_refuses_other_values():
    with pytest.raises(TrainRecipeError, match="'channels_last' must be true, false or auto, got 'yes'"):
        TrainRecipe(channels_last="yes")


def test_the_default_recipe_trains_where_channels_last_crashes_on_the_cpu():
    """resnet_tiny, 2 threads, batch 29 on 32x32 digits: channels-last aborts the process on torch 2.14.1's CPU
    build (double free or a segmentation fault); the default recipe must run through."""
    script = textwrap.dedent("""
        import torch
        torch.set_num_threads(2)
        from pdenas.data import load_dataset
        from pdenas.train import TrainRecipe, train_model
        from pdenas.zoo import create_model
        data = load_dataset("digits", seed=0, val_fraction=0.2, subset=400)
        torch.manual_seed(0)
        train_model(create_model("resnet_tiny", in_channels=1), data, TrainRecipe(epochs=3, batch_size=29), seed=0, device="cpu")
        print("trained")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "trained" in done.stdout, done.stderr[-2000:]
