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
"""

from modeseek import batches, losses, metrics, policies, problems, references, regimes, rewards, sequences
from modeseek._xla import fast_compile
from modeseek.engine import HyperParams, RunConfig, Trajectory, enable_compilation_cache, run
from modeseek.problems import Problem, paper_bandit, pi_star

__version__ = "0.1.0"

__all__ = [
    "Problem",
    "pi_star",
    "paper_bandit",
    "run",
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
