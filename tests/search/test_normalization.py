"""The search feeds the original what it was trained on: the mean and std of ``normalize:``, else of the
``weights`` checkpoint's model card, else the training split's own (``build_context``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import pdenas
from pdenas.data import load_dataset
from pdenas.export import ModelCard, Preprocessing
from pdenas.report import open_study
from pdenas.search import SearchConfig, SearchConfigError, TrialRecord, build_context
from pdenas.train import TrainRecipe, evaluate, train_model

from .conftest import run_pdenas

CARD_MEAN, CARD_STD = (0.25,), (0.4,)  # far from digits' own statistics (about 0.30 and 0.38)


def _split(**stats) -> pdenas.data.ImageData:
    """The tiny search's data split (seed 0, 20 % validation, 240 training images), optionally renormalised."""
    return dataclasses.replace(load_dataset("digits", seed=0, val_fraction=0.2, subset=240), **stats)


def _original(tmp_path: Path, *, card: bool, trained: bool = False) -> Path:
    """resnet_tiny's seeded weights (``trained``: one epoch on inputs normalised with CARD_MEAN/STD), saved as a
    pdenas checkpoint with a model card saying CARD_MEAN/STD, or as a plain state dict."""
    torch.manual_seed(0)
    model = pdenas.create_model("resnet_tiny", num_classes=10, in_channels=1)
    if trained:
        recipe = TrainRecipe(epochs=2, batch_size=32, lr=0.05)
        train_model(model, _split(mean=CARD_MEAN, std=CARD_STD), recipe, seed=0, device="cpu")
    if not card:
        torch.save(model.state_dict(), tmp_path / "plain.pt")
        return tmp_path / "plain.pt"
    data = load_dataset("digits")
    pre = dataclasses.replace(Preprocessing.from_data(data), mean=CARD_MEAN, std=CARD_STD)
    plan = pdenas.CompressionPlan.identity(pdenas.find_stages(model, torch.zeros(2, *data.input_size)))
    pdenas.save_compressed(tmp_path / "carded.pt", model, plan=plan, model_spec="resnet_tiny", input_size=data.input_size,
                           num_classes=10, metadata={"model_card": ModelCard(classes=tuple(data.classes), preprocessing=pre).to_dict()})
    return tmp_path / "carded.pt"


def _config(tiny_yaml, **changes) -> SearchConfig:
    return SearchConfig.from_yaml(tiny_yaml()).with_overrides(**changes)


def test_the_weights_model_card_sets_the_normalisation(tiny_yaml, tmp_path):
    ctx = build_context(_config(tiny_yaml, weights=str(_original(tmp_path, card=True))))
    assert ctx.data.mean == CARD_MEAN and ctx.data.std == CARD_STD
    own = _split()
    assert ctx.data.mean != pytest.approx(own.mean)  # what the search used before: the split's statistics
    assert torch.equal(ctx.data.train_x, own.train_x)  # the images themselves are the split's


def test_normalize_wins_over_the_card_and_a_plain_state_dict_keeps_the_splits_statistics(tiny_yaml, tmp_path):
    given = {"normalize": {"mean": [0.5], "std": [0.5]}}
    ctx = build_context(_config(tiny_yaml, weights=str(_original(tmp_path, card=True)), **given))
    assert ctx.data.mean == (0.5,) and ctx.data.std == (0.5,)
    plain = build_context(_config(tiny_yaml, weights=str(_original(tmp_path, card=False))))
    own = _split()
    assert plain.data.mean == own.mean and plain.data.std == own.std


def test_a_normalisation_for_other_channels_is_one_line(tiny_yaml, tmp_path, capsys):
    config = tiny_yaml(extra="normalize: {mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225]}\n")
    with pytest.raises(SearchConfigError, match="gives a mean and std for 3 channel"):
        build_context(SearchConfig.from_yaml(config))
    proc = run_pdenas("search", "--config", str(config), "--study-dir", str(tmp_path / "s"))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "'normalize' gives a mean and std for 3 channel(s), but the dataset's images have 1" in proc.stderr


def test_a_search_from_carded_weights_scores_the_original_as_its_card_says(tiny_yaml, tmp_path, one_thread):
    """Trial 0 scores the given original on the card's normalisation (the accuracy it has so), not on the
    split's statistics (which cost this original accuracy)."""
    weights = _original(tmp_path, card=True, trained=True)
    proc = run_pdenas("search", "--config", str(tiny_yaml(trials=1)), "--study-dir", str(tmp_path / "s"), "--weights", str(weights))
    assert proc.returncode == 0, proc.stderr
    scored = TrialRecord.from_trial(open_study(tmp_path / "s").trials[0]).accuracy
    model = pdenas.load_compressed(weights).eval()
    as_trained = evaluate(model, _split(mean=CARD_MEAN, std=CARD_STD), device="cpu")
    fed_otherwise = evaluate(model, _split(), device="cpu")
    assert scored == pytest.approx(as_trained) and as_trained > fed_otherwise
