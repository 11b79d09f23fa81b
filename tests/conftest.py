import warnings

import pytest
import torch

warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread for tiny inputs: as fast, and immune to OpenMP spinning on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
