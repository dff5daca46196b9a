"""modeseek: how preference fine-tuning moves probability mass, exactly and fast.

A pure-JAX laboratory for the didactic bandits of Tajwar et al., "Preference
Fine-Tuning of LLMs Should Leverage Suboptimal, On-Policy Data" (ICML 2024).

The public API, in the order a reader follows it:

* problems: :mod:`modeseek.references`, :mod:`modeseek.rewards`,
  :class:`Problem`, :func:`pi_star`, :mod:`modeseek.problems` presets;
* policies: :mod:`modeseek.policies`;
* losses: :mod:`modeseek.losses` (registry and the three families);
* data regimes: :mod:`modeseek.regimes`, batches in :mod:`modeseek.batches`;
* engine: :func:`run`, :class:`Trajectory`; metrics: :mod:`modeseek.metrics`;
  compile time: :func:`enable_compilation_cache`, :func:`fast_compile`,
  :class:`modeseek.compile_log.CompileLog`;
* token sequences (the paper's combinatorial bandit): :mod:`modeseek.sequences`.

Every name is imported on first use (PEP 562), so that ``import modeseek.cli``
(and ``modeseek --help``) does not load jax; ``import modeseek as ms;
ms.run(...)`` and ``from modeseek import run`` work as with eager imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Before anything can start XLA: cap its CPU code at AVX2 so that results are
# bit-identical across x86-64 machines (modeseek._xla explains; no jax import).
from modeseek import _isa  # noqa: F401

if TYPE_CHECKING:
    from modeseek import batches, losses, metrics, policies, problems, references, regimes, rewards, sequences
    from modeseek._xla import fast_compile
    from modeseek.engine import HyperParams, RunConfig, Trajectory, enable_compilation_cache, make_train, run
    from modeseek.problems import Problem, paper_bandit, pi_star

__version__ = "0.1.0"

_FROM = {
    "fast_compile": "modeseek._xla",
    **dict.fromkeys(("HyperParams", "RunConfig", "Trajectory", "enable_compilation_cache", "make_train", "run"), "modeseek.engine"),
    **dict.fromkeys(("Problem", "paper_bandit", "pi_star"), "modeseek.problems"),
}

__all__ = [
    "Problem",
    "pi_star",
    "paper_bandit",
    "run",
    "make_train",
    "enable_compilation_cache",
    "fast_compile",
    "Trajectory",
    "RunConfig",
    "HyperParams",
    "references",
    "rewards",
    "problems",
    "policies",
    "losses",
    "batches",
    "regimes",
    "metrics",
    "sequences",
    "__version__",
]


def __getattr__(name: str) -> Any:
    if name in _FROM:
        value = getattr(importlib.import_module(_FROM[name]), name)
    elif name.startswith("__"):
        raise AttributeError(f"module 'modeseek' has no attribute {name!r}")
    else:
        # Any submodule, as eager imports made e.g. ms.engine available too.
        try:
            value = importlib.import_module(f"modeseek.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"modeseek.{name}":
                raise
            raise AttributeError(f"module 'modeseek' has no attribute {name!r}") from None
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
