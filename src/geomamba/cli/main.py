"""The ``geomamba`` command: train, test, predict, demo, models, stats, config, experiment.

Bad input (a missing file, a wrong config key, a corrupt checkpoint...) prints one line
``geomamba: error: ...`` and exits with status 2; set ``GEOMAMBA_DEBUG=1`` to see the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

__all__ = ["main"]

log = logging.getLogger("geomamba")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="geomamba",
        description="Remote-sensing change detection with Mamba hybrid networks.",
        epilog="Run 'geomamba COMMAND -h' for the options of a command.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("config", help="YAML config file (see configs/)")
    t.add_argument("overrides", nargs="*", help="key.path=value overrides, e.g. optim.lr=8e-4")
    g = t.add_mutually_exclusive_group()
    g.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=None,
        metavar="CKPT",
        help="resume from CKPT (default: runs/<name>/checkpoints/last.ckpt, which is also used "
        "automatically when it exists)",
    )
    g.add_argument("--fresh", action="store_true", help="start from scratch even if last.ckpt exists")

    e = sub.add_parser("test", help="evaluate a checkpoint on a dataset split")
    e.add_argument("checkpoint")
    e.add_argument("--data", help="dataset root (default: the one the checkpoint was trained on)")
    e.add_argument("--split", default="test", help="split folder name (default: test)")
    e.add_argument("--out", help="output folder (default: <run>/test_<split>/)")
    _eval_args(e)

    pr = sub.add_parser(
        "predict",
        help="predict change maps for image pairs (--a/--b), or classify an MS + PAN scene (--ms/--pan)",
    )
    pr.add_argument("checkpoint")
    pr.add_argument("--a", help="image of date A (or a folder)")
    pr.add_argument("--b", help="image of date B (or a folder with the same names)")
    pr.add_argument("--ms", help="multispectral image of a scene (ADCD-Net stage-II checkpoints)")
    pr.add_argument("--pan", help="panchromatic image of the scene (ratio x the MS resolution)")
    pr.add_argument(
        "--grid",
        choices=("pan", "ms"),
        default="pan",
        help="--ms/--pan: class map on the PAN (default) or MS grid",
    )
    pr.add_argument("--batch-size", type=int, default=256, help="--ms/--pan: patch pairs per batch (256)")
    pr.add_argument("--out", required=True, help="output .tif/.png (or a folder for folder inputs)")
    pr.add_argument("--label", help="ground truth (file or folder): also print the scores")
    pr.add_argument("--prob", action="store_true", help="write float32 change probabilities, not 0/255")
    pr.add_argument("--block", type=int, help="pixels per block read at once (default 4 x window)")
    pr.add_argument(
        "--window-batch",
        type=int,
        help="windows per forward pass (default: the checkpoint's eval.window_batch); lower uses less memory",
    )
    pr.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    _eval_args(pr)

    d = sub.add_parser("demo", help="synthetic data -> train a small model on CPU -> test -> predict")
    d.add_argument("--out", default="runs/demo", help="demo folder (default: runs/demo)")
    d.add_argument("--config", help="config (default: configs/demo.yaml)")
    d.add_argument("overrides", nargs="*", help="key.path=value overrides of the demo config")

    m = sub.add_parser("models", help="list registered models")
    m.add_argument("pattern", nargs="?", help="glob filter, e.g. 'subtask*'")
    m.add_argument("--task", help="change, segmentation or classification")
    m.add_argument("--summary", metavar="NAME", help="print the parameter/FLOPs summary of a model")
    m.add_argument("--input-size", type=int, default=256, help="input side for --summary (default 256)")
    m.add_argument("--in-channels", type=int, default=3, help="bands per date for --summary (default 3)")

    s = sub.add_parser("stats", help="per-band mean/std of a split (both dates), as config lines")
    s.add_argument("root", help="dataset root")
    s.add_argument("--split", default="train")
    s.add_argument("--bands", type=int, nargs="+", help="1-based bands to use")
    s.add_argument("--list-file", help="list file restricting the split")

    c = sub.add_parser("config", help="print a validated config (defaults when no file is given)")
    c.add_argument("config", nargs="?")
    c.add_argument("overrides", nargs="*")
    c.add_argument("--keys", action="store_true", help="list every key with its type and default")

    from geomamba.experiments.cli import add_experiment_parser

    add_experiment_parser(sub)
    return p


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="load a checkpoint holding pickled Python objects (can run code; only for files you trust)",
    )
    p.add_argument("--window", type=int, help="sliding-window size (default: from the checkpoint)")
    p.add_argument("--overlap", type=int, help="window overlap in pixels (default: from the checkpoint)")
    p.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None, help="flip TTA")


def _cmd_train(args) -> int:
    from geomamba.engine.config import load_config
    from geomamba.engine.distributed import is_launch_rank_zero
    from geomamba.engine.train import train

    cfg = load_config(args.config, args.overrides)
    resume = False if args.fresh else args.resume
    result = train(cfg, resume=resume)
    if is_launch_rank_zero():  # under DDP every process returns the same result: print it once
        _report(result)
    return 0


def _report(result) -> None:
    lines = [f"run folder: {result.run_dir}"]
    if result.best_checkpoint:
        lines.append(f"best checkpoint: {result.best_checkpoint}")
    monitor = getattr(result, "monitor", "F1_changed")
    if result.best:
        lines.append(
            "best validation: epoch {epoch}, {monitor} {f1:.4f}".format(
                epoch=result.best["epoch"], monitor=monitor, f1=result.best.get(monitor, float("nan"))
            )
        )
    if result.test_scores:
        lines.append(f"test: {_score_line(result.test_scores)}")
    print("\n".join(lines))


def _score_line(scores: dict) -> str:
    """One line of test scores: the changed class's F1/IoU and OA for change detection (two classes),
    mIoU/OA/mF1 (and Boundary IoU) for segmentation, OA/AA/Kappa for pixel classification."""
    if "cosine" in scores:  # ADCD-Net stage I
        return f"cosine {scores['cosine']:.4f}  similarity {scores['similarity']:.5f}"
    if "AA" in scores:
        return f"OA {scores['OA']:.4f}  AA {scores['AA']:.4f}  Kappa {scores['Kappa']:.4f}"
    if "BIoU" in scores or len(scores["per_class"]) != 2:
        extra = f"  BIoU {scores['BIoU']:.4f}" if "BIoU" in scores else ""
        return f"mIoU {scores['mIoU']:.4f}  OA {scores['OA']:.4f}  mF1 {scores['mF1']:.4f}{extra}"
    ch = list(scores["per_class"].values())[-1]
    return f"F1 {ch['F1']:.4f}  IoU {ch['IoU']:.4f}  OA {scores['OA']:.4f}"


def _eval_overrides(args) -> dict:
    ev = {}
    if args.window is not None:
        ev["window"] = args.window
    if args.overlap is not None:
        ev["overlap"] = args.overlap
    if args.tta is not None:
        ev["tta"] = args.tta
    return {"eval": ev} if ev else {}


def _cmd_test(args) -> int:
    from geomamba.engine.train import evaluate_checkpoint

    scores = evaluate_checkpoint(
        args.checkpoint,
        data_root=args.data,
        split=args.split,
        out_dir=args.out,
        overrides=_eval_overrides(args),
        trust_checkpoint=args.trust_checkpoint,
    )
    kappa = f"  Kappa {scores['Kappa']:.4f}" if "Kappa" in scores and "AA" not in scores else ""
    print(f"{_score_line(scores)}{kappa}")
    return 0


def _cmd_predict(args) -> int:
    from geomamba.data.errors import GeomambaError
    from geomamba.engine.predict import predict_paths
    from geomamba.engine.train import setup_logging

    setup_logging()
    if args.ms or args.pan:
        return _cmd_predict_mspan(args)
    if not (args.a and args.b):
        raise GeomambaError("predict needs --a and --b (change detection) or --ms and --pan (MS + PAN scene)")
    res = predict_paths(
        args.checkpoint,
        args.a,
        args.b,
        args.out,
        label=args.label,
        output="prob" if args.prob else "binary",
        window=args.window,
        overlap=args.overlap,
        tta=args.tta,
        block=args.block,
        window_batch=args.window_batch,
        device=args.device,
        trust_checkpoint=args.trust_checkpoint,
    )
    for r in res.outputs:
        print(f"wrote {r.path} ({r.height}x{r.width})")
    return 0


def _cmd_predict_mspan(args) -> int:
    from geomamba.data.errors import GeomambaError
    from geomamba.engine.predict_mspan import predict_mspan

    if not (args.ms and args.pan) or args.a or args.b:
        raise GeomambaError("classifying a scene needs both --ms and --pan (and neither --a nor --b)")
    res = predict_mspan(
        args.checkpoint,
        args.ms,
        args.pan,
        args.out,
        label=args.label,
        grid=args.grid,
        batch_size=args.batch_size,
        device=args.device,
    )
    print(f"wrote {res.path} and {res.png} ({res.height}x{res.width})")
    if res.scores is not None:
        print(_score_line(res.scores))
    return 0


def _cmd_demo(args) -> int:
    from geomamba.cli.demo import run_demo

    run_demo(out=args.out, config=args.config, overrides=args.overrides)
    return 0


def _cmd_models(args) -> int:
    from geomamba.models import get_model_entry, list_models

    if args.summary:
        entry = get_model_entry(args.summary)  # clear error for unknown names
        try:
            from geomamba import summary  # provided by the flagship package; imported lazily
        except ImportError:
            from geomamba.data.errors import GeomambaError

            raise GeomambaError(
                "model summaries need geomamba.summary, which this installation lacks"
            ) from None
        from geomamba.models import create_model

        s = args.input_size
        shape = (1, 2, args.in_channels, s, s) if entry.task == "change" else (1, args.in_channels, s, s)
        summary(create_model(args.summary), input_size=shape)
        return 0
    names = list_models(args.pattern, task=args.task)
    if not names:
        print("no registered model matches")
    for n in names:
        print(f"{n:40s} {get_model_entry(n).task}")
    return 0


def _cmd_stats(args) -> int:
    from geomamba.data.validate import validate_dataset
    from geomamba.engine.train import setup_logging

    setup_logging()
    report = validate_dataset(
        args.root,
        [args.split],
        list_files={args.split: args.list_file},
        bands=args.bands,
        stats_split=args.split,
    )
    st = report.stats
    rep = report.splits[args.split]
    print(f"# {args.root} split {args.split}: {len(rep.samples)} pairs, {rep.bands} band(s) {rep.dtype}")
    print("data:")
    print(f"  mean: [{', '.join(f'{v:.4f}' for v in st.mean)}]")
    print(f"  std: [{', '.join(f'{v:.4f}' for v in st.std)}]")
    return 0


def _cmd_config(args) -> int:
    import yaml

    from geomamba.engine.config import config_keys, config_to_dict, load_config

    if args.keys:
        for key, tp, default in config_keys():
            print(f"{key:40s} {tp:40s} {default!r}")
        return 0
    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None), end="")
    return 0


def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    if "Original Traceback" in msg:  # re-raised from a DataLoader worker: keep the original message
        msg = [ln for ln in msg.splitlines() if ln.strip()][-1]
        msg = msg.split(": ", 1)[1] if msg.split(": ", 1)[0].endswith("Error") else msg
    return msg


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``geomamba`` command; returns the exit status."""
    from geomamba.data.errors import GeomambaError
    from geomamba.experiments.cli import cmd_experiment

    args = _parser().parse_args(argv)
    handler = {
        "train": _cmd_train,
        "test": _cmd_test,
        "predict": _cmd_predict,
        "demo": _cmd_demo,
        "models": _cmd_models,
        "stats": _cmd_stats,
        "config": _cmd_config,
        "experiment": cmd_experiment,
    }[args.command]
    from geomamba.engine.interrupt import Interrupted, sigterm_raises

    try:
        with sigterm_raises():
            return handler(args)
    except Interrupted as exc:  # SIGTERM/SIGINT: training saved a checkpoint; outputs are never partial
        print(f"geomamba: {exc}", file=sys.stderr)
        return exc.exit_code
    except (GeomambaError, KeyError) as exc:
        if os.environ.get("GEOMAMBA_DEBUG") or (isinstance(exc, KeyError) and "model" not in str(exc)):
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else _one_line(exc)
        print(f"geomamba: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("geomamba: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
