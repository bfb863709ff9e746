"""Experiments: comparisons of models and ablation grids over datasets, resumable, with one report.

``geomamba experiment compare|ablate CONFIG`` (``geomamba.experiments.cli``) runs
``geomamba.experiments.runner.run_experiment``: configs in ``config``, run plans in ``plan``, timed loops
in ``speed``, GPU spreading in ``parallel``, figures in ``figures`` and the report in ``report``.
"""
