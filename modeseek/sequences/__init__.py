"""Token-sequence policies: the paper's combinatorial bandit with autoregressive models.

A prompt token, then L response tokens (PAPER_NOTES C): sequence problems and
rewards, three policy classes (factorised, bigram, a tiny causal transformer),
autoregressive sampling, the core losses at sequence level and a compile-once
``run`` with the conventions of :func:`modeseek.run`.
"""
