"""``geomamba experiment compare|ablate CONFIG``: the command-line side of the experiment runner."""

from __future__ import annotations

import argparse

__all__ = ["add_experiment_parser", "cmd_experiment"]


def add_experiment_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``experiment {compare,ablate}`` to the ``geomamba`` sub-commands."""
    x = sub.add_parser("experiment", help="run a comparison or an ablation grid (resumable) and its report")
    kinds = x.add_subparsers(dest="kind", required=True, metavar="KIND")
    for kind, text in (
        ("compare", "train, test and measure every model of 'models' on every dataset"),
        ("ablate", "train, test and measure every variant of 'ablation.groups' on every dataset"),
    ):
        p = kinds.add_parser(kind, help=text)
        p.add_argument("config", help="experiment YAML (see configs/experiments/)")
        p.add_argument(
            "overrides",
            nargs="*",
            help="key=value: experiment keys (datasets.NAME.root=..., output_dir=...) or recipe keys "
            "applied to every run (trainer.max_epochs=1)",
        )
        p.add_argument(
            "--only", nargs="+", metavar="RUN", help="run only these runs (DATASET/RUN or RUN, globs)"
        )
        p.add_argument(
            "--devices",
            help="spread runs over these GPUs, one run per GPU at a time (e.g. 0,1,2,3 or auto); default: "
            "the config's 'devices', else one run after another in this process",
        )
        p.add_argument(
            "--changed",
            choices=("error", "rerun", "keep"),
            default="error",
            help="runs whose config changed since they ran: stop with an error (default), run them again "
            "(old folder moved aside), or keep their results",
        )
        p.add_argument("--fail-fast", action="store_true", help="stop at the first failed run")
        p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
        p.add_argument(
            "--report-only", action="store_true", help="run nothing; write the report of finished runs"
        )
        p.add_argument("--list", action="store_true", help="print the runs and their status, run nothing")


def cmd_experiment(args: argparse.Namespace) -> int:
    """Handler of ``geomamba experiment``."""
    from geomamba.experiments.runner import run_experiment

    if args.list:
        from geomamba.experiments.config import load_experiment, split_overrides
        from geomamba.experiments.plan import plan_runs
        from geomamba.experiments.runner import run_status

        exp_over, recipe_over = split_overrides(args.overrides)
        exp = load_experiment(args.config, exp_over)
        runs = plan_runs(exp, args.kind, recipe_over)
        for r in runs:
            extra = f"  code {r.code}  groups {','.join(r.groups)}" if r.code else ""
            print(f"{r.key:60s} {r.model:24s} {run_status(r):9s}{extra}")
        print(f"{len(runs)} run(s) under {exp.folder / 'runs'}")
        return 0
    result = run_experiment(
        args.config,
        args.kind,
        args.overrides,
        only=args.only,
        devices=args.devices,
        report=not args.no_report,
        report_only=args.report_only,
        changed=args.changed,
        fail_fast=args.fail_fast,
    )
    if result.report:
        print(f"experiment folder: {result.folder}")
        for name in ("csv", "md", "html"):
            print(f"  {result.report[name]}")
    return 0
