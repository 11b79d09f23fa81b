"""Stage features (issue 13, item 2): computed once, kept on disk in float16, recomputed when stale, read
in bounded batches, and refused for a stage whose blocks do not reproduce its output."""

from __future__ import annotations

import copy
import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn

from pdenas.data import ImageData
from pdenas.distill import (
    FeaturesError,
    StageFeatures,
    StageModule,
    StageNotComposableError,
    distill_stage,
    make_variant,
    model_fingerprint,
    stage_features,
)

from .conftest import IMAGES, RECIPE, VAL_IMAGES


def _mtimes(folder):
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.suffix in (".npy", ".json")}


def test_features_are_recorded_for_every_stage(features, original):
    assert features.computed
    assert [s.name for s in features.stages] == ["layer1", "layer2", "layer3", "layer4"]
    assert features.count("train") == IMAGES and features.count("val") == VAL_IMAGES
    assert features.model_fingerprint == model_fingerprint(original)
    for stage in features.stages:
        assert features.composable(stage.name)
        x, y = next(features.batches(stage.name, batch_size=16))
        assert x.dtype == y.dtype == torch.float32 and y.shape == (16, stage.channels, stage.height, stage.width)
        # the recorded pairs are what the original's stage computes (to float16 rounding)
        with torch.no_grad():
            torch.testing.assert_close(StageModule(original, stage)(x), y, rtol=2e-2, atol=2e-2)
        assert features.target_variance(stage.name) > 0
    # a ResNet's stage output is the next stage's input
    _, out1 = next(features.batches("layer1", batch_size=8))
    in2, _ = next(features.batches("layer2", batch_size=8))
    assert torch.equal(out1, in2)


def test_features_are_computed_once_and_reused(features, original, digits16):
    before = _mtimes(features.folder)
    again = stage_features(original, digits16, features.folder, images=IMAGES, val_images=VAL_IMAGES, device="cpu")
    assert not again.computed and again.manifest == features.manifest
    assert _mtimes(features.folder) == before  # nothing rewritten
    assert StageFeatures.open(features.folder).fingerprint == features.fingerprint


def test_stale_features_are_recomputed(original, digits16, tmp_path):
    first = stage_features(original, digits16, tmp_path, images=64, val_images=16, device="cpu")
    changed = copy.deepcopy(original)
    with torch.no_grad():
        changed.layer2[0].conv1.weight.mul_(1.5)  # other weights
    second = stage_features(changed, digits16, tmp_path, images=64, val_images=16, device="cpu")
    assert second.computed and second.model_fingerprint != first.model_fingerprint
    x, y = next(second.batches("layer2", batch_size=64))
    with torch.no_grad():
        torch.testing.assert_close(StageModule(changed, second.stage("layer2"))(x), y, rtol=2e-2, atol=2e-2)

    assert stage_features(changed, digits16, tmp_path, images=32, val_images=16, device="cpu").computed  # other N
    assert stage_features(changed, digits16, tmp_path, images=32, val_images=16, seed=1, device="cpu").computed  # other seed
    assert not stage_features(changed, digits16, tmp_path, images=32, val_images=16, seed=1, device="cpu").computed

    (tmp_path / "01.train.out.npy").unlink()  # a missing file
    assert stage_features(changed, digits16, tmp_path, images=32, val_images=16, seed=1, device="cpu").computed
    (tmp_path / "manifest.json").unlink()  # a writer that crashed before its manifest
    with pytest.raises(FeaturesError, match="no complete stage features"):
        StageFeatures.open(tmp_path)
    assert stage_features(changed, digits16, tmp_path, images=32, val_images=16, seed=1, device="cpu").computed


def test_reading_holds_one_batch_in_memory(features):
    path = features.folder / features.manifest["stages"][0]["files"]["train"]["in"]
    total = np.load(path, mmap_mode="r").nbytes  # float16 bytes of layer1's inputs on disk
    batches = features.batches("layer1", batch_size=16, shuffle=True, seed=3)
    tracemalloc.start()
    try:
        rows = sum(x.shape[0] for x, _ in batches)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == IMAGES
    assert peak < total / 4  # numpy holds one batch of inputs and targets at a time, not the file


def test_a_stage_whose_blocks_do_not_compose_is_refused(tmp_path):
    class GluedBlocks(nn.Module):
        """Blocks glued by a functional ReLU in the forward: running the blocks alone skips it."""

        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.blocks = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(3))
            self.head = nn.Linear(8, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.stem(x))  # (B, 8, H, W)
            for block in self.blocks:
                x = torch.relu(block(x))
            return self.head(x.mean(dim=(2, 3)))

    torch.manual_seed(0)
    images = torch.randint(0, 256, (40, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40) % 10
    data = ImageData(
        name="random", source="test", classes=[str(i) for i in range(10)], train_x=images[:32], train_y=labels[:32],
        val_x=images[32:], val_y=labels[32:], mean=(0.5,) * 3, std=(0.25,) * 3, hflip=False,
    )
    model = GluedBlocks()
    features = stage_features(model, data, tmp_path, images=32, val_images=8, device="cpu")
    assert [s.name for s in features.stages] == ["blocks"] and not features.composable("blocks")
    variant = make_variant("blocks", 1, None, features=features, recipe=RECIPE)
    with pytest.raises(StageNotComposableError, match="stage 'blocks': running its blocks one after the other") as err:
        distill_stage(model, variant, features, device="cpu")
    assert "\n" not in str(err.value)


def test_bad_arguments_are_one_line_errors(original, digits16, tmp_path, features):
    with pytest.raises(FeaturesError, match="images must be an integer >= 1, got 0"):
        stage_features(original, digits16, tmp_path, images=0)
    with pytest.raises(FeaturesError, match="no stage 'layer9'; their stages are: layer1, layer2, layer3, layer4"):
        features.stage("layer9")
    with pytest.raises(FeaturesError, match="split must be 'train' or 'val'"):
        next(features.batches("layer1", split="test"))
