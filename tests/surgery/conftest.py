"""The surgery tests run tiny inputs: one intra-op thread is as fast, and immune to a busy machine
(with other jobs on the cores, OpenMP threads spin and a 1-minute run takes several)."""

import pytest


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every test here runs with one thread (the shared ``one_thread`` fixture)."""
