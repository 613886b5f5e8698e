import numpy as np
import pytest


@pytest.fixture
def rng(request):
    # Fresh inputs per run, reproducible from the printed seed.
    seed = np.random.SeedSequence().entropy % (2**32)
    print(f"seed {seed}")
    return np.random.default_rng(seed)
