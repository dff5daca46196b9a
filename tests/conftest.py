"""Shared fixtures and settings for the modeseek test suite.

Compiles are the dominant cost of these tests (about 1-2 s per engine
configuration on one core), so problems and small reference distributions are
session-scoped and the helpers below build each jitted function once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from hypothesis import HealthCheck, settings

import modeseek as ms

# Deadline off: the first example of a property compiles. derandomize: the
# examples are a fixed function of the test, so every run checks the same cases.
settings.register_profile(
    "modeseek",
    deadline=None,
    max_examples=25,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("modeseek")


@pytest.fixture(scope="session")
def far():
    """The paper's "not aligned" 1-token bandit (reward id 4, PAPER_NOTES A.3)."""
    return ms.paper_bandit("far")


@pytest.fixture(scope="session")
def near():
    """The paper's "aligned" 1-token bandit (reward id 5, PAPER_NOTES A.3)."""
    return ms.paper_bandit("near")


@pytest.fixture(scope="session")
def small_problem():
    """A 12-bin problem with a two-mode reference and a reward with exact ties.

    The gaussian bump is centred on bin 7, so bins 6 and 8 (and 5 and 9, ...)
    have bit-identical rewards: tie-breaking rules are exercised.
    """
    k = 12
    ref = ms.references.mixture(k, [2.0, 8.0], [1.5, 2.0], [0.7, 0.3])
    reward = ms.rewards.gaussian_bump(k, 7.0, 3.0)
    return ms.Problem(ref, reward, name="small")


@pytest.fixture(scope="session")
def small_data_logq():
    """(12,) log-probabilities of an offline data distribution unlike the reference."""
    return jnp.log(ms.references.mixture(12, [4.0], [3.0]))


@pytest.fixture(scope="session")
def small_policy_logits():
    """(12,) fixed random logits of a policy that is neither the reference nor the data."""
    return jax.random.normal(jax.random.PRNGKey(1), (12,))


@pytest.fixture
def x64():
    """Run a test body with 64-bit JAX arrays, without flipping the global flag for other tests."""
    with jax.enable_x64(True):
        yield
