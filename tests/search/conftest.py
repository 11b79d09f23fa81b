"""A tiny, real search setting: resnet_tiny on 240 real digit images, one short epoch per trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..commands import pdenas_cmd, run_pdenas  # noqa: F401  (the tests here import them from this module)
from .pg import postgres_server  # noqa: F401  (a real PostgreSQL server, for test_postgres.py)

TINY = """\
model: resnet_tiny
dataset: digits
trials: {trials}
seed: 0
device: cpu
space:
  stages: all
  global_layer: [true, false]
  keep: {{low: 1, high: 2}}
  iterations: {{low: 1, high: 2}}
  dt: {{low: 0.1, high: 0.3, log: true}}
budget:
  epochs: {epochs}
  batch_size: 32
  lr: 0.05
  subset: {subset}
  val_fraction: 0.2
stagewise:  # a light stage-wise step: these tests are about the search around it (test_stagewise.py is about the step)
  images: 120
  val_images: 60
  recipe: {{epochs: 1, batch_size: 32, precision: fp32}}
sampler:
  name: random
"""


@pytest.fixture
def tiny_yaml(tmp_path: Path):
    def make(*, trials: int = 3, epochs: int = 1, subset: int = 240, extra: str = "", name: str = "tiny.yaml") -> Path:
        path = tmp_path / name
        path.write_text(TINY.format(trials=trials, epochs=epochs, subset=subset) + extra)
        return path

    return make
