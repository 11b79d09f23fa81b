"""The models committed under ``benchmarks/models/`` (issue 13, items 6 and 8) are what their manifest says:
the file's hash, its cost, and a model card that ``pdenas evaluate`` can feed it with."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

import pdenas
from pdenas.export import load_exported

MODELS = Path(__file__).resolve().parents[1] / "benchmarks" / "models"
MANIFEST = MODELS / "MANIFEST.json"
ENTRIES = json.loads(MANIFEST.read_text())["models"] if MANIFEST.is_file() else []


def test_the_manifest_lists_one_original_and_stays_small():
    if not ENTRIES:
        pytest.skip("benchmarks/models/MANIFEST.json lists no model")
    assert sum(bool(entry["original"]) for entry in ENTRIES) == 1
    assert sum((MODELS / entry["file"]).stat().st_size for entry in ENTRIES) < 20 * 2**20
    assert sorted(p.name for p in MODELS.glob("*.pt")) == sorted(entry["file"] for entry in ENTRIES)


@pytest.mark.parametrize("entry", ENTRIES, ids=[entry["file"] for entry in ENTRIES])
def test_each_committed_model_is_what_the_manifest_says(entry):
    path = MODELS / entry["file"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
    loaded = load_exported(path)  # what pdenas evaluate opens: it needs the model card
    assert loaded.module is not None
    cost = pdenas.profile(loaded.module, loaded.card.preprocessing.input_size)
    assert (cost.macs, cost.conv_macs, cost.params) == (entry["macs"], entry["conv_macs"], entry["params"])
    assert loaded.card.cost == cost
    assert len(loaded.card.classes) == 10 and loaded.card.preprocessing.input_size == (3, 32, 32)
    assert 0.0 < entry["heldout_accuracy"] <= 1.0
    logits = loaded.run(torch.zeros(2, 3, 32, 32))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()
