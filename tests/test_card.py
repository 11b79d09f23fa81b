"""The model card (issue 13 item 7): how to feed an exported model and what its outputs mean, as one typed
record that round-trips through JSON and reproduces the training batches' preprocessing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pdenas.cost import Cost, Latency
from pdenas.data import load_dataset
from pdenas.export import ExportError, ModelCard, Preprocessing


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0, val_fraction=0.2)


def test_preprocessing_from_data_is_the_training_batches(digits):
    pre = Preprocessing.from_data(digits)
    assert pre.input_size == (1, 32, 32) and pre.color_mode == "L" and pre.scale == 1 / 255
    assert pre.mean == digits.mean and pre.std == digits.std
    x, _ = next(iter(digits.val_batches(64)))  # what the model saw in training and validation
    assert torch.allclose(pre.prepare(digits.val_x[:64]), x, atol=1e-5)


def test_rgb_images_become_grayscale_as_pil_converts_them():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(4, 9, 7, 3), dtype=np.uint8)  # (N, H, W, 3)
    expected = np.stack([np.asarray(Image.fromarray(image, "RGB").convert("L")) for image in rgb])  # (N, H, W)
    pre = Preprocessing(input_size=(1, 9, 7), color_mode="L", mean=(0.0,), std=(1.0,), scale=1.0)
    got = pre.prepare(torch.from_numpy(rgb).permute(0, 3, 1, 2))  # (N, 1, H, W)
    assert torch.equal(got[:, 0], torch.from_numpy(expected).float())
    gray = Preprocessing(input_size=(3, 9, 7), color_mode="RGB", mean=(0.0,) * 3, std=(1.0,) * 3, scale=1.0)
    assert torch.equal(gray.prepare(torch.from_numpy(expected)[:, None]), torch.from_numpy(expected)[:, None].float().expand(-1, 3, -1, -1))


def test_images_of_another_size_are_resized_to_the_models():
    pre = Preprocessing(input_size=(3, 8, 8), color_mode="RGB", mean=(0.5,) * 3, std=(0.25,) * 3)
    x = torch.full((2, 3, 16, 16), 255, dtype=torch.uint8)
    assert torch.allclose(pre.prepare(x), torch.full((2, 3, 8, 8), 2.0))  # (1 - 0.5) / 0.25


def test_the_card_round_trips_through_json(digits):
    card = ModelCard(
        classes=tuple(digits.classes), preprocessing=Preprocessing.from_data(digits), model="resnet_tiny",
        cost=Cost(params=10, macs=200, conv_macs=150), dataset="digits", accuracy=0.93,
        latency=Latency(median_ms=0.4, runtime="onnxruntime", batch_size=1, threads=2, device="cpu", runs=100),
    )
    assert ModelCard.from_json(card.to_json()) == card
    assert ModelCard.from_dict(card.to_dict()) == card
    bare = ModelCard(classes=("cat", "dog"), preprocessing=Preprocessing((3, 4, 4), "RGB", (0.1,) * 3, (0.2,) * 3))
    assert ModelCard.from_json(bare.to_json()) == bare


@pytest.mark.parametrize(
    "change,message",
    [
        ({"preprocessing": None}, "the model card is incomplete: it needs classes and preprocessing"),
        ({"version": 7}, "the model card has version 7; this pdenas reads 1: upgrade pdenas"),
        ({"preprocessing": {"input_size": [3, 4, 4], "color_mode": "RGB", "mean": [0.1], "std": [0.2, 0.2, 0.2]}},
         "the model's preprocessing record does not add up"),
        ({"preprocessing": {"input_size": [1, 4, 4], "color_mode": "RGB", "mean": [0.1], "std": [0.2]}},
         "the model's preprocessing record does not add up"),
        ({"preprocessing": {"input_size": [1, 4, 4]}}, "the model's preprocessing record is incomplete or malformed (KeyError"),
        ({"cost": {"params": 1}}, "the model card is malformed (KeyError"),
    ],
)
def test_a_malformed_card_is_one_line(change, message):
    data = ModelCard(classes=("a", "b"), preprocessing=Preprocessing((1, 4, 4), "L", (0.1,), (0.2,))).to_dict()
    data.update(change)
    if data["preprocessing"] is None:
        del data["preprocessing"]
    with pytest.raises(ExportError) as info:
        ModelCard.from_dict(data)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)
    with pytest.raises(ExportError, match="the model card is not valid JSON"):
        ModelCard.from_json("{not json")
