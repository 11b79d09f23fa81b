"""The surgery tests run tiny inputs: one intra-op thread is as fast, and immune to a busy machine
(with other jobs on the cores, OpenMP threads spin and a 1-minute run takes several)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
