"""DEPO: Difficulty-Estimated Policy Optimization, as a verl recipe.

What is the algorithm and what is built around it (README "Layout" has a line per file):

Training core (what ``python -m recipe.depo.main_depo`` runs; needs only ``pip install depo-verl``)
    main_depo, trainer         the entry point and verl hook glue
    config, config_fields      the ``depo:`` block (BaseConfig dataclasses)
    validation, preflight      the start-up check (config, then data and reward), run once
    intake, filter             draw, score, select, carry over (the selection is pure)
    prompt_text, labels        the text the estimator reads; mean@k and log-prob labels by uid
    advantage                  zero-advantage groups; the registered ``grpo_depo`` estimator
    estimator/, workers/       the difficulty estimator, its online trainer, its Ray worker
    checkpoint, fsutil         DEPO state in verl's checkpoints; atomic writes
    reward, verify_pool        compute_score (score, acc) with bounded math-verify checks

Side products (each usable on its own; none is imported by the core)
    router/     Table 3 routing and the live proxy     extra ``depo-verl[router]``
    evaluate/   Avg@n of a model or checkpoint          (core dependencies)
    report/     tables and plots over run directories   extra ``depo-verl[report]``
    cpu/        verl (and vLLM) on CPU: a verl plugin   (core dependencies)
    demo/       the CPU demo's tiny policy              (core dependencies)

The data builders (``data_prep``, a package of its own) import from the core, never the reverse.
"""

__version__ = "0.1.0"
