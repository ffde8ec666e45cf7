"""`RUN_DIR/report.md` (+ PNGs beside it): one page that says what a run was and how good it is.

It gathers what is otherwise spread over run.json, metrics.json and export/: the config that
matters, each stage's curves, trainable parameters and wall time, and the test metrics exactly as
metrics.json holds them. It adds the one thing no file holds: test error per forecast step for the
exported model next to the naive baseline on the same windows (llm4ts_scale.inference.step_errors), so a
reader sees at which horizons the model beats "repeat the last value". The per-step errors also
re-derive the overall test MSE/MAE in a fresh process, a check that the export reproduces the run.
"""

from __future__ import annotations

import json
from pathlib import Path

from llm4ts_scale.core.errors import UserError
from llm4ts_scale.core.io import atomic_write_text
from llm4ts_scale.inference.step_errors import StepErrors, checkpoint_steps

LOSS_PNG = "report_loss.png"
STEPS_PNG = "report_steps.png"
COVERAGE_PNG = "report_coverage.png"
RELIABILITY_PNG = "report_reliability.png"
LONG_LIST = 12  # metrics.json lists longer than this (per-step coverage) are drawn, not written into the table
REPORT_MD = "report.md"


# ---------------------------------------------------------------- reading the run directory


def read_run(run_dir: Path) -> tuple[dict, dict | None]:
    """(run.json, metrics.json or None when the run has not reached its test evaluation)."""
    from llm4ts_scale.core.run_state import RunState

    run = RunState.read(run_dir).data
    path = run_dir / "metrics.json"
    if not path.is_file():
        return run, None
    try:
        return run, json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise UserError(f"{path} is corrupted (not valid JSON); re-run the training command to rewrite it") from None


def compute_step_errors(run_dir: Path, data_path: str | None, batch_size: int | None) -> tuple[StepErrors, StepErrors]:
    """Evaluate the exported model per step on the test split (UserError if the data changed)."""
    from llm4ts_scale.inference.loading import load_model, open_checked_store
    from llm4ts_scale.inference.step_errors import step_errors

    loaded = load_model(run_dir)
    store = open_checked_store(loaded, data_path, changed_hint="pass --data with the original file, or --no-eval "
                                                                "to skip the per-step evaluation")
    d = loaded.config.data
    return step_errors(loaded, store, "test", d.seq_len, d.pred_len, batch_size or d.eval_batch_size or 256)


def ordered_stages(run: dict) -> dict:
    """run.json's stages in training order (the file stores keys sorted: align, ft, lp)."""
    from llm4ts_scale.core.stages import STAGE_NAMES

    stages = run["stages"]
    order = [n for n in STAGE_NAMES if n in stages] + [n for n in stages if n not in STAGE_NAMES]
    return {name: stages[name] for name in order}


# ---------------------------------------------------------------- formatting


def _num(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:,}" if isinstance(value, int) else f"{value:.{digits}f}"


def _seconds(value) -> str:
    return "–" if value is None else f"{value:.1f} s"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def config_section(run: dict) -> list[str]:
    c = run["config"]
    d, m = c["data"], c["model"]
    lora = m.get("lora", {})
    rows = [
        ["backbone", f"`{m['backbone']}`"], ["layers (first K blocks)", m["layers"]], ["quantize", m["quantize"]],
        ["LoRA", f"r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, targets={lora.get('targets')}"],
        ["data", f"`{d['path']}` (split {d['split']})"], ["look-back L", d["seq_len"]], ["horizon H", d["pred_len"]],
        ["patch / stride", f"{d['patch_len']} / {d['stride']}"], ["few-shot %", d["few_shot_percent"]],
        ["batch size per process", d["batch_size"]], ["world size", run.get("world_size", "–")], ["seed", c.get("seed")],
    ]
    return ["## Configuration", ""] + _table(["key", "value"], [[k, _num(v) if isinstance(v, float) else v]
                                                                for k, v in rows])


def stages_section(run: dict) -> list[str]:
    rows = []
    for name, s in ordered_stages(run).items():
        val = s.get("val") or {}
        rows.append([name, s.get("status", "–"), s.get("epochs_run", "–"), s.get("best_epoch", "–"),
                     _num(val.get("mse")), _num(val.get("mae")), _num(s.get("trainable_params")),
                     _seconds(s.get("wall_time_s"))])
    test = run.get("test") or {}
    rows.append(["test + export", test.get("status", "–"), "", "", "", "", "", _seconds(test.get("wall_time_s"))])
    return (["## Stages", "", "Validation metrics are those of each stage's best epoch (lowest validation loss); "
             "the alignment stage's are next-patch errors, not forecast errors.", ""]
            + _table(["stage", "status", "epochs run", "best epoch", "val MSE", "val MAE", "trainable params",
                      "wall time"], rows))


def steps_section(model: StepErrors, naive: StepErrors, metrics: dict | None) -> list[str]:
    H = len(model.mse)
    rows = [[f"{step}", _num(model.mse[step - 1]), _num(naive.mse[step - 1]), _num(model.mae[step - 1]),
             _num(naive.mae[step - 1])] for step in checkpoint_steps(H)]
    rows.append([f"all {H} steps", _num(model.overall_mse), _num(naive.overall_mse), _num(model.overall_mae),
                 _num(naive.overall_mae)])
    lines = ["## Test error per forecast step", "",
             f"Exported model vs the naive baseline (repeat the last observed value) on the same "
             f"{model.samples:,} test (window, channel) pairs, standardized scale.", ""]
    lines += _table(["step", "model MSE", "naive MSE", "model MAE", "naive MAE"], rows)
    test = (metrics or {}).get("test") or {}
    if "mse" in test and "mae" in test:
        lines += ["", f"Re-evaluated from export/ in this process: MSE {model.overall_mse:.6f}, MAE "
                      f"{model.overall_mae:.6f} over {model.samples} samples; metrics.json holds MSE "
                      f"{test['mse']:.6f}, MAE {test['mae']:.6f} over {test.get('samples', '?')} samples."]
    return lines + ["", f"![test error per step]({STEPS_PNG})"]


def metrics_section(metrics: dict | None) -> list[str]:
    lines = ["## Metrics (metrics.json)", ""]
    if metrics is None:
        return lines + ["No metrics.json: the run has not finished its test evaluation."]
    splits = [s for s in ("test", "val") if isinstance(metrics.get(s), dict)]
    splits += [s for s in metrics if isinstance(metrics[s], dict) and s not in splits]
    keys: list[str] = []
    for split in splits:
        keys += [k for k in metrics[split] if k not in keys]
    rows = [[k] + [_cell(metrics[s][k]) if k in metrics[s] else "–" for s in splits] for k in keys]
    return lines + ["Values exactly as metrics.json holds them (standardized scale).", ""] + _table(["metric"] + splits, rows)


def _cell(value) -> str:
    if isinstance(value, list) and len(value) > LONG_LIST:
        return f"{len(value)} values (see the figures)"
    return json.dumps(value)


def intervals_section(test: dict, run_dir: Path) -> list[str]:
    """Calibration of the test intervals: coverage and width per central interval, coverage per forecast step and
    the reliability diagram, drawn from metrics.json (nothing is re-evaluated)."""
    from llm4ts_scale.inference.report_plots import plot_coverage_by_step, plot_reliability

    for png in (COVERAGE_PNG, RELIABILITY_PNG):
        (run_dir / png).unlink(missing_ok=True)  # a figure from an earlier report would not match
    if "intervals" not in test:
        return ["## Prediction intervals", "", "metrics.json holds no calibration figures (a run made before them)."]
    method = test.get("calibration", "split")
    rows = [[f"{name} %", f"{v['levels'][0]:g} - {v['levels'][1]:g}", _num(v["coverage"]), _num(v["width"])]
            for name, v in test["intervals"].items()]
    lines = ["## Prediction intervals", "",
             f"Calibration `{method}` (config `calibration`), from {test.get('calibration_windows', '?')} validation "
             f"windows: test coverage and mean width (standardized) of each central interval; CRPS "
             f"{_num(test.get('crps'))}.", ""]
    lines += _table(["interval", "levels", "coverage", "mean width"], rows)
    if test.get("coverage_80_by_step"):
        plot_coverage_by_step(test["coverage_80_by_step"], run_dir / COVERAGE_PNG, method)
        lines += ["", f"![80 % coverage per step]({COVERAGE_PNG})"]
    if test.get("quantile_coverage"):
        plot_reliability(test["quantile_coverage"], run_dir / RELIABILITY_PNG, method)
        lines += ["", f"![reliability diagram]({RELIABILITY_PNG})"]
    return lines


def provenance_section(run: dict) -> list[str]:
    versions = run.get("versions") or {}
    shown = ", ".join(f"{k} {v}" for k, v in versions.items())
    return ["## Provenance", "",
            f"- config hash `{run.get('config_hash', '–')}`, data fingerprint `{run.get('data_fingerprint', '–')}`",
            f"- created {run.get('created', '–')}, world size {run.get('world_size', '–')}",
            f"- versions: {shown or '–'}"]


# ---------------------------------------------------------------- the report


def write_report(run_dir: str | Path, *, data_path: str | None = None, evaluate: bool = True,
                 batch_size: int | None = None) -> Path:
    """Write RUN_DIR/report.md, report_loss.png, (when evaluated) report_steps.png and (when the test has
    intervals) report_coverage.png and report_reliability.png; return the .md path."""
    from llm4ts_scale.inference.report_plots import plot_loss_curves, plot_step_errors

    run_dir = Path(run_dir)
    run, metrics = read_run(run_dir)
    title = run_dir.resolve().name
    lines = [f"# Run report: {title}", "", f"Run directory `{run_dir}`.", ""]
    lines += config_section(run) + [""] + stages_section(run) + [""]
    if plot_loss_curves(ordered_stages(run), run_dir / LOSS_PNG):
        lines += [f"![loss curves]({LOSS_PNG})", ""]
    else:
        (run_dir / LOSS_PNG).unlink(missing_ok=True)  # a figure from an earlier report would not match
        lines += ["No epoch has finished yet: no loss curves.", ""]
    if not evaluate or not (run_dir / "export" / "config.json").is_file():
        (run_dir / STEPS_PNG).unlink(missing_ok=True)
    if not evaluate:
        lines += ["## Test error per forecast step", "", "Skipped (--no-eval).", ""]
    elif not (run_dir / "export" / "config.json").is_file():
        lines += ["## Test error per forecast step", "",
                  "No exported model (export/config.json) yet: finish training to get per-step errors.", ""]
    else:
        model_err, naive_err = compute_step_errors(run_dir, data_path, batch_size)
        plot_step_errors(model_err, naive_err, run_dir / STEPS_PNG)
        lines += steps_section(model_err, naive_err, metrics) + [""]
    test = (metrics or {}).get("test")
    if isinstance(test, dict) and "coverage_80" in test:
        lines += intervals_section(test, run_dir) + [""]
    lines += metrics_section(metrics) + [""] + provenance_section(run)
    return atomic_write_text(run_dir / REPORT_MD, "\n".join(lines) + "\n")
