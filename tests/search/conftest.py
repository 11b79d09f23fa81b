"""A tiny, real search setting: resnet_tiny on 240 real digit images, one short epoch per trial."""

from __future__ import annotations

from pathlib import Path

import pytest

from pdenas.search import plan_key

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


def first_arrivals(records, rung: int) -> list[int]:
    """Per plan, the 'of n' its first arrival at ``rung`` saw, sorted. A plan's first arrival is its smallest
    'of' there over all its trials: a later trial of the plan (a promotion, or the sampler proposing it again)
    takes over its rungs and is judged again among as many or more, and a plan's lowest-numbered trial may
    have stopped below the rung. With the shared lock these are 1, 2, 3, ... without a repeat."""
    first: dict[str, int] = {}
    for r in (r for r in records if r.plan is not None):
        for e in r.rungs or ():
            if e.rung == rung:
                key = plan_key(r.plan)
                first[key] = min(first.get(key, e.of), e.of)
    return sorted(first.values())
