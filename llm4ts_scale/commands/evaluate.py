"""`llm4ts-scale evaluate`: score a built-in baseline, or a trained run directory.

  llm4ts-scale evaluate --data DATA --baseline naive|seasonal|mean --seq-len L --pred-len H
                        [--split test] [--period N] [--out metrics.json]
  llm4ts-scale evaluate --data DATA --baseline dlinear --seq-len L --pred-len H
                        [--few-shot-percent P] [--epochs N] [--lr X] [--seed S] [--split test] [--out metrics.json]
  llm4ts-scale evaluate --data DATA --baseline patchtst --seq-len L --pred-len H
                        [--few-shot-percent P] [--epochs N] [--lr X] [--seed S] [--set key=value ...] [--split test]
                        [--out metrics.json]
  llm4ts-scale evaluate --data DATA --baseline rlinear --seq-len L --pred-len H [--few-shot-percent P]
                        [--split test] [--out metrics.json]
  llm4ts-scale evaluate RUN_DIR [--split test] [--out metrics.json]
  (every form: [--calibration split|adaptive|aggregated], how the test intervals use the validation residuals)

Baselines go through the same windows and metric code as models: metrics are on the
standardized scale, `samples` counts the (window, channel) pairs scored. Test scores carry conformal
prediction intervals calibrated on validation (coverage, width, CRPS, MASE): --calibration adaptive (the
default, the config's `calibration`) lets their spread follow the errors as test origins arrive
(llm4ts_scale/stats/adaptive.py), aggregated does so with several step sizes at once, split keeps the
split-conformal table; a RUN_DIR uses its own unless given.

dlinear and patchtst are trained first (on train, few-shot honoured; the best-validation epoch is kept),
then scored on --split (val or test); --out writes both {"val": ..., "test": ...}. patchtst is PatchTST
(Nie et al. 2023) from random weights, the official ETTh1 setting by default; --set changes its recipe
(llm4ts_scale/baselines/patchtst.py:PatchTSTRecipe), e.g. --set patch_len=24 stride=2 schedule=constant batch_size=16 (ILI).
rlinear (RevIN + ridge regression on the look-back, Li et al. 2023) is solved in closed form on train
(few-shot honoured), its penalty chosen on every validation window; --out writes val and test.
"""

from __future__ import annotations

import argparse
import json

from llm4ts_scale.commands.data_flags import add_data_arguments, schema_of
from llm4ts_scale.core.config import Calibration, Fill, RunConfig, choices

# Training flags of the trained baselines (dlinear, patchtst): (flag, attribute, default); None in args means
# "not given", and the baseline's own recipe default applies (a None default here).
_TRAINING_FLAGS = (("--few-shot-percent", "few_shot_percent", 100), ("--epochs", "epochs", None),
                   ("--lr", "lr", None), ("--seed", "seed", 2023))
TRAINED = ("dlinear", "patchtst")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a baseline (--baseline) or a trained RUN_DIR",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", nargs="?", default=None, metavar="RUN_DIR", help="a trained run directory")
    p.add_argument("--data", default=None, help="CSV/Parquet file, prepared store dir, or dataset NAME")
    p.add_argument("--baseline", default=None, choices=("naive", "seasonal", "mean", "dlinear", "patchtst", "rlinear"),
                   help="naive: repeat the last value; seasonal: repeat the last --period values; "
                        "mean: look-back mean; dlinear: train DLinear (Zeng et al. 2023) on train, then score; "
                        "patchtst: train PatchTST (Nie et al. 2023) from scratch on train, then score; "
                        "rlinear: RevIN + ridge on the look-back, closed form, penalty chosen on validation")
    p.add_argument("--seq-len", type=int, default=None, help="look-back L for baselines (default 336)")
    p.add_argument("--pred-len", type=int, default=None, help="horizon H for baselines (default 96)")
    p.add_argument("--split", default=None, choices=("train", "val", "test"), help="split to score (default test)")
    p.add_argument("--period", type=int, default=None, help="season length for --baseline seasonal")
    p.add_argument("--batch-size", type=int, default=512, help="windows per scoring batch (does not change the "
                                                               "result; dlinear trains with batch 32)")
    p.add_argument("--few-shot-percent", type=int, default=None,
                   help="dlinear, patchtst, rlinear: train on the first P%% of the train split (default 100)")
    p.add_argument("--epochs", type=int, default=None, help="dlinear, patchtst: at most N epochs (dlinear 10, early "
                                                            "stopping after 3 without a better validation MSE; "
                                                            "patchtst 100, after 10)")
    p.add_argument("--lr", type=float, default=None, help="dlinear, patchtst: Adam learning rate (dlinear 0.005, "
                                                          "halved every epoch; patchtst 1e-3)")
    p.add_argument("--seed", type=int, default=None, help="dlinear, patchtst: seed of the initial weights, dropout "
                                                          "and the shuffle order (default 2023)")
    p.add_argument("--set", nargs="+", default=None, metavar="KEY=VALUE",
                   help="patchtst: recipe fields, e.g. patch_len=24 stride=2 d_model=128 layers=3 val_stride=4")
    p.add_argument("--split-rule", default="auto", help="how to split a CSV given as --data: auto, ett-hourly, "
                                                        "ett-minute, ratio")
    p.add_argument("--freq", default=None, help="frequency alias for a CSV given as --data")
    p.add_argument("--fill", default="none", choices=choices(Fill), help="NaN handling for a CSV given as --data")
    p.add_argument("--calibration", default=None, choices=choices(Calibration),
                   help="prediction intervals: adaptive (follow the errors as test origins arrive: one ACI run), "
                        "aggregated (several ACI runs weighted by their scores) or split (split conformal); "
                        f"default {RunConfig.calibration} for baselines, the run's own for RUN_DIR")
    p.add_argument("--original-scale", action="store_true", help="score in the data's units instead of standardized")
    add_data_arguments(p)
    p.add_argument("--out", default=None, help="also write {split: metrics} to this JSON file")
    p.set_defaults(handler=run)


def _run_dir(args) -> int:
    """Score a trained run in a fresh process, exactly like training did (same windows, metric code, precision)."""
    from llm4ts_scale.inference.evaluate_run import evaluate_loaded
    from llm4ts_scale.inference.loading import load_model
    from llm4ts_scale.stats.metrics import write_metrics_json

    loaded = load_model(args.run_dir)
    if args.calibration is not None and loaded.conformal is not None:
        loaded.conformal.method = args.calibration
    split = args.split or "test"
    metrics = evaluate_loaded(loaded, args.data, split)
    if args.out:
        write_metrics_json(args.out, {split: metrics})
    print(json.dumps({**metrics, "precision": loaded.precision}))
    return 0


def run(args: argparse.Namespace) -> int | None:
    from llm4ts_scale.core.errors import UserError

    if args.run_dir is not None and args.baseline is None:
        return _run_dir(args)
    if args.run_dir is not None:
        raise UserError("give either RUN_DIR (a trained run) or --baseline, not both")
    if args.baseline is None:
        raise UserError("nothing to evaluate: give a RUN_DIR, or --baseline naive|seasonal|mean|dlinear with --data")
    if args.data is None:
        raise UserError("--baseline needs --data (a CSV/Parquet file, store dir or dataset name)")
    if args.set is not None and args.baseline != "patchtst":
        raise UserError(f"--set only applies to --baseline patchtst, not {args.baseline}; drop it")
    if args.baseline in TRAINED:
        return _run_fitted(args)
    for flag, attr, _ in _TRAINING_FLAGS:
        if getattr(args, attr) is not None and not (args.baseline == "rlinear" and attr == "few_shot_percent"):
            raise UserError(f"{flag} only applies to --baseline {' or '.join(TRAINED)} ({args.baseline} trains no "
                            "epochs); drop it")
    return _run_fitted(args) if args.baseline == "rlinear" else _run_baseline(args)


def _run_baseline(args: argparse.Namespace) -> int:
    from llm4ts_scale.baselines.simple import check_period
    from llm4ts_scale.core.errors import UserError
    from llm4ts_scale.data.sources import open_store

    seq_len = args.seq_len if args.seq_len is not None else 336
    pred_len = args.pred_len if args.pred_len is not None else 96
    split = args.split or "test"
    for flag, value in (("--seq-len", seq_len), ("--pred-len", pred_len), ("--batch-size", args.batch_size)):
        if value <= 0:
            raise UserError(f"{flag} must be positive, got {value}")
    check_period(args.baseline, args.period, seq_len)
    store = open_store(args.data, split=args.split_rule, freq=args.freq, fill=args.fill, schema=schema_of(args))
    store.num_samples(split, seq_len, pred_len)  # a split too short for L+H fails here, before torch loads

    import torch

    from llm4ts_scale.baselines.registry import Windows, fit
    from llm4ts_scale.data.windows import WindowSpec, make_loader
    from llm4ts_scale.stats.metrics import MetricAccumulator, write_metrics_json

    forecast = fit(args.baseline, Windows(store, seq_len, pred_len), period=args.period).forecast

    if split == "test" and not args.original_scale:  # with split-conformal intervals from the validation windows
        result = _intervals(forecast, store, (seq_len, pred_len), args.batch_size, _method(args))
    else:
        loader = make_loader(store, WindowSpec(split, seq_len, pred_len), args.batch_size)
        metrics = MetricAccumulator()
        with torch.no_grad():
            for batch in loader:
                pred, target = forecast(batch), batch["y"]
                if args.original_scale:
                    pred = store.inverse_transform(pred.double(), batch["channel"])
                    target = store.inverse_transform(target.double(), batch["channel"])
                metrics.update(pred, target)
        result = metrics.compute()
    if args.out:
        write_metrics_json(args.out, {split: result})
    print(json.dumps({**result, "split": split, "baseline": args.baseline, "seq_len": seq_len,
                      "pred_len": pred_len, "scale": "original" if args.original_scale else "standardized",
                      "data_fingerprint": store.fingerprint}))
    return 0


def _trained_baseline_store(args: argparse.Namespace, few_shot: int):
    """Checks shared by the baselines that fit on the train split (dlinear, patchtst, rlinear); returns
    (store, seq_len, pred_len, split)."""
    from llm4ts_scale.core.errors import UserError
    from llm4ts_scale.data.sources import open_store

    seq_len = args.seq_len if args.seq_len is not None else 336
    pred_len = args.pred_len if args.pred_len is not None else 96
    split = args.split or "test"
    for flag, value in (("--seq-len", seq_len), ("--pred-len", pred_len), ("--batch-size", args.batch_size)):
        if value <= 0:
            raise UserError(f"{flag} must be positive, got {value}")
    if not 0 < few_shot <= 100:
        raise UserError(f"--few-shot-percent must be in (0, 100], got {few_shot}; "
                        "use e.g. 10 for the first 10 % of the train split")
    if split == "train":
        raise UserError(f"--baseline {args.baseline} trains on the train split, so scoring it says nothing; "
                        "use --split val or test")
    if args.period is not None:
        raise UserError("--period only applies to --baseline seasonal; drop it")
    if args.original_scale:
        raise UserError(f"--original-scale is not supported with --baseline {args.baseline}; drop it "
                        "(metrics are standardized)")
    store = open_store(args.data, split=args.split_rule, freq=args.freq, fill=args.fill, schema=schema_of(args))
    for name, percent in (("train", few_shot), ("val", 100), ("test", 100)):
        store.num_samples(name, seq_len, pred_len, percent)  # a split too short fails here, before torch loads
    return store, seq_len, pred_len, split


def _method(args) -> str:
    return args.calibration if args.calibration is not None else RunConfig.calibration


def _intervals(forecast, store, shape: tuple[int, int], batch_size: int, method: str, val_stride: int = 1) -> dict:
    """Test metrics of a baseline with conformal intervals (`method`: split | adaptive) calibrated on the validation
    windows it was selected on (llm4ts_scale/evaluation.py:score_with_intervals): coverage, CRPS and MASE next to
    MSE / MAE."""
    from llm4ts_scale.data.windows import WindowSpec
    from llm4ts_scale.evaluation import score_with_intervals

    seq_len, pred_len = shape
    return score_with_intervals(forecast, store, WindowSpec("val", seq_len, pred_len, step=val_stride),
                                WindowSpec("test", seq_len, pred_len), batch_size, method)


def _report(args, store, seq_len: int, pred_len: int, split: str, val: dict, test: dict, facts: dict) -> int:
    """--out {val, test}, and one JSON line of the chosen split with the baseline's facts."""
    from llm4ts_scale.stats.metrics import write_metrics_json

    if args.out:
        write_metrics_json(args.out, {"val": val, "test": test})
    chosen = test if split == "test" else val
    print(json.dumps({**chosen, "split": split, "baseline": args.baseline, "seq_len": seq_len, "pred_len": pred_len,
                      "scale": "standardized", "data_fingerprint": store.fingerprint, "val_mse": val["mse"], **facts}))
    return 0


def _run_fitted(args: argparse.Namespace) -> int:
    """dlinear, patchtst (the best-validation epoch kept) or rlinear (the penalty chosen on validation): fitted on the
    train split through the baselines' one face (llm4ts_scale/baselines/registry.py), then scored."""
    from llm4ts_scale.core.errors import UserError

    few_shot, epochs, lr, seed = (getattr(args, attr) if getattr(args, attr) is not None else default
                                  for _, attr, default in _TRAINING_FLAGS)
    if epochs is not None and epochs <= 0:
        raise UserError(f"--epochs must be positive, got {epochs}")
    if lr is not None and not 0 < lr < float("inf"):  # also refuses nan
        raise UserError(f"--lr must be a positive number, got {lr}")
    recipe = None
    if args.baseline == "patchtst":  # the recipe first: a bad --set is refused before data is opened
        from llm4ts_scale.baselines.patchtst import recipe_from_pairs

        recipe = recipe_from_pairs([*(args.set or []), *([f"epochs={epochs}"] if epochs else []),
                                    *([f"lr={lr}"] if lr else []), f"eval_batch_size={args.batch_size}"])
    elif args.baseline == "dlinear":
        from llm4ts_scale.baselines.dlinear import DLinearRecipe

        recipe = DLinearRecipe(**({"epochs": epochs} if epochs else {}), **({"lr": lr} if lr else {}),
                               eval_batch_size=args.batch_size)
    store, seq_len, pred_len, split = _trained_baseline_store(args, few_shot)

    from llm4ts_scale.baselines.registry import Windows, fit

    fitted = fit(args.baseline, Windows(store, seq_len, pred_len, few_shot, seed, batch_size=args.batch_size),
                 recipe=recipe, show_progress=True)
    test = _intervals(fitted.forecast, store, (seq_len, pred_len), args.batch_size, _method(args), fitted.val_stride)
    return _report(args, store, seq_len, pred_len, split, fitted.val, test, fitted.facts)
