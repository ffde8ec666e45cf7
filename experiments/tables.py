"""The published tables, rendered from the small files experiments/run.py keeps (nothing here trains).

Each function takes an experiment (experiments/run.py:Experiment) and returns {file name: markdown}, written
under the experiment's results directory. What a table needs beyond the cells (captions, published figures,
which rows to show) is the experiment file's `report`.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def _run(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _minutes(stages: dict) -> float:
    return sum(s.get("wall_time_s", 0) for s in stages.values()) / 60


def _last(stages: dict) -> tuple[str, dict]:
    """The last forecasting stage a run finished (ft when it ran, else lp): the weights the run hands on."""
    name = [s for s in ("lp", "ft") if s in stages][-1]
    return name, stages[name]


def _rows(exp, lines: list[str]):
    """(name, cell, stages) of every finished cell, in the file's order; an unfinished one becomes a `(not run)`
    row of as many columns as the table's header."""
    columns = lines[0].count("|") - 1
    for name, cell in exp.cells.items():
        run = _run(exp.results / name / "run.json")
        if run is None:
            lines.append(f"| {name} | {cell.note} | (not run) |" + " |" * (columns - 3))
        else:
            yield name, cell, run["stages"]


# ---------------------------------------------------------------- accuracy (test split, every choice on validation)

def _test_metrics(exp, name: str) -> tuple[dict, dict] | None:
    """(test metrics, facts) of a finished cell, or None."""
    path = exp.results / name
    if exp.cells.get(name) is not None and exp.cells[name].kind == "evaluate":
        metrics = _run(path / "metrics.json")
        if metrics is None:
            return None
        summary = _run(path / "summary.json") or {}
        return metrics["test"], {"minutes": summary.get("wall_time_s", 0) / 60, "val_mse": metrics["val"]["mse"]}
    run = _run(path / "run.json")
    if run is None:
        return None
    minutes = _minutes(run["stages"]) + run["test"].get("wall_time_s", 0) / 60
    val = run["stages"][list(run["stages"])[-1]]["val"]["mse"]
    return run["test"]["metrics"], {"minutes": minutes, "val_mse": val, "run": run}


def _mean_cell(values: list[dict], key: str = "mse", second: str = "mae") -> str:
    if not values:
        return "(not run)"
    first, other = [v[key] for v in values], [v[second] for v in values]
    if len(values) == 1:
        return f"{first[0]:.3f} / {other[0]:.3f}"
    return f"{statistics.mean(first):.3f} ± {statistics.stdev(first):.3f} / {statistics.mean(other):.3f}"


def _dataset_table(exp, key: str, data: dict) -> str:
    report, horizons = exp.report, data["horizons"]
    seeds = report["seeds"]
    lines = ["| model | " + " | ".join(f"H={h}" for h in horizons) + " | avg | minutes per run | seeds |",
             "|" + "---|" * (len(horizons) + 4)]

    def add(title: str, per_h: dict[int, list[dict]], minutes: str, used: str) -> None:
        avg = "-"
        if all(per_h.get(h) for h in horizons):  # average over horizons of each horizon's mean
            avg = (f"{statistics.mean(statistics.mean(v['mse'] for v in per_h[h]) for h in horizons):.3f} / "
                   f"{statistics.mean(statistics.mean(v['mae'] for v in per_h[h]) for h in horizons):.3f}")
        lines.append(f"| {title} | " + " | ".join(_mean_cell(per_h.get(h, [])) for h in horizons) +
                     f" | {avg} | {minutes} | {used} |")

    found = {}
    for row, title in report["rows"].items():
        row_seeds = seeds if row in report["multi_seed"] else seeds[:1]
        done = {h: [(s, r) for s in row_seeds if (r := _test_metrics(exp, f"{data['prefix']}{row}-{h}-{s}"))]
                for h in horizons}
        found[row] = done
        minutes = [f["minutes"] for h in horizons for _, (_, f) in done[h]]
        used = sorted({s for h in horizons for s, _ in done[h]})
        add(title, {h: [m for _, (m, _) in done[h]] for h in horizons},
            f"{statistics.mean(minutes):.1f}" if minutes else "-", ", ".join(map(str, used)) or "-")
    reference = {h: [f["run"] for s, (_, f) in found["llm4ts"][h] if s == seeds[0]] for h in horizons}
    for base, title in (("rlinear", "rlinear (RevIN + ridge, closed form)"), ("dlinear", "DLinear"),
                        ("naive", "naive (repeat the last value)")):
        per_h = {h: [r["test"]["baselines"][base] for r in reference[h] if base in r["test"].get("baselines", {})]
                 for h in horizons}
        add(title, per_h, "< 1" if base != "naive" else "-", str(seeds[0]) if base == "dlinear" else "-")
    for title, figures in data["published"].items():
        add(title, {h: [{"mse": figures[h][0], "mae": figures[h][1]}] for h in horizons if h in figures}, "-", "-")
    lines += ["", data["caption"], "", _validation(horizons, seeds, found), "", _intervals(horizons, seeds, found)]
    return "\n".join(lines)


def _validation(horizons: list[int], seeds: list[int], found: dict) -> str:
    """What every choice was made on: each row's validation MSE next to rlinear's on the same windows."""
    lines = ["Validation MSE (seed mean) on the windows each run selected on:", "",
             "| H | " + " | ".join(found) + " | rlinear |", "|" + "---|" * (len(found) + 2)]
    for h in horizons:
        cells = [f"{statistics.mean(f['val_mse'] for _, (_, f) in found[row][h]):.4f}" if found[row][h] else "-"
                 for row in found]
        rl = [f["run"]["test"]["baselines"]["rlinear"]["val_mse"] for s, (_, f) in found["llm4ts"][h]
              if s == seeds[0] and "rlinear" in f["run"]["test"].get("baselines", {})]
        lines.append(f"| {h} | " + " | ".join(cells) + (f" | {rl[0]:.4f} |" if rl else " | - |"))
    return "\n".join(lines)


def _intervals(horizons: list[int], seeds: list[int], found: dict) -> str:
    """Split-conformal 80 % intervals on test: coverage, CRPS and MASE where the runs recorded them."""
    lines = ["Prediction intervals on test (split-conformal from validation residuals; runs made before intervals "
             "existed show -): coverage of the 80 % interval / CRPS / MASE", "",
             "| model | " + " | ".join(f"H={h}" for h in horizons) + " |", "|" + "---|" * (len(horizons) + 1)]

    def cell(values: list[dict]) -> str:
        values = [v for v in values if "coverage_80" in v]
        if not values:
            return "-"
        mean = {k: statistics.mean(v[k] for v in values) if all(k in v for v in values) else None
                for k in ("coverage_80", "crps", "mase")}
        mase = f"{mean['mase']:.2f}" if mean["mase"] is not None else "-"
        return f"{mean['coverage_80']:.3f} / {mean['crps']:.3f} / {mase}"

    for row in ("llm4ts", "patchtst"):
        lines.append(f"| {row} | " + " | ".join(cell([m for _, (m, _) in found[row][h]]) for h in horizons) + " |")
    for key in ("rlinear", "dlinear", "naive"):
        per_h = [[f["run"]["test"]["baselines"][key] for s, (_, f) in found["llm4ts"][h]
                  if s == seeds[0] and key in f["run"]["test"].get("baselines", {})] for h in horizons]
        lines.append(f"| {key} | " + " | ".join(cell(v) for v in per_h) + " |")
    return "\n".join(lines)


def accuracy(exp) -> dict[str, str]:
    datasets = exp.report["datasets"]
    return {"table.md": "\n\n".join(f"## {key}\n\n{_dataset_table(exp, key, data)}" for key, data in datasets.items())}


# ---------------------------------------------------------------- ablation (validation only)

def ablation(exp) -> dict[str, str]:
    lines = ["| variant | what it tests | best val MSE | best val MAE | stage, epoch | LP best val | minutes |",
             "|---|---|---|---|---|---|---|"]
    for name, cell, stages in _rows(exp, lines):
        last, best = _last(stages)
        lp = stages.get("lp", {}).get("val", {}).get("mse")
        lp_text = f"{lp:.4f}" if lp is not None else "-"
        lines.append(f"| {name} | {cell.note} | {best['val']['mse']:.4f} | {best['val']['mae']:.4f} | {last} "
                     f"{best['best_epoch']} | {lp_text} | {_minutes(stages):.0f} |")
    return {"table.md": "\n".join([*lines, "", exp.report["footer"]])}


# ---------------------------------------------------------------- validation sweep and backbone scaling

def rlinear_val(exp, group: str, args: list[str]) -> float:
    """rlinear's validation MSE on a cell's validation windows at the cell's look-back, cached in
    <results>/rlinear-<group>[-L<seq_len>].json (the validation targets do not depend on L)."""
    look_back = [a for a in args if a.startswith("data.seq_len=")]
    suffix = f"-L{look_back[-1].split('=')[1]}" if look_back else ""
    path = exp.results / f"rlinear-{group}{suffix}.json"
    if not path.is_file():
        from llm4ts_scale.baselines.rlinear import fit_rlinear
        from llm4ts_scale.core.config import load_config
        from llm4ts_scale.core.io import atomic_write_json
        from llm4ts_scale.data.sources import open_run_store

        d = load_config(None, exp.groups[group] + look_back).data
        r = fit_rlinear(open_run_store(d), d.seq_len, d.pred_len, few_shot_percent=d.few_shot_percent,
                        val_stride=d.val_stride, score_test=False)
        atomic_write_json(path, {"val": r.val, "alpha": r.alpha, "wall_time_s": r.wall_time_s}, indent=1)
    return json.loads(path.read_text())["val"]["mse"]


def _sweep_table(exp) -> str:
    lines = ["| arm | what it tests | val MSE | rlinear val MSE | gain over rlinear | read-out (LP penalties) | "
             "FT | minutes |", "|---|---|---|---|---|---|---|---|"]
    for name, cell, stages in _rows(exp, lines):
        val = _last(stages)[1]["val"]["mse"]
        base = rlinear_val(exp, cell.group, cell.args)
        lp = stages["lp"]["history"][0]
        alpha_u = lp.get("alpha_linear")
        readout = f"linear {alpha_u:.3g}, llm {lp.get('alpha_llm'):.3g}" if alpha_u else f"llm {lp.get('alpha_llm'):.3g}"
        ft = "-"
        if "ft" in stages:
            ft = "kept LP" if stages["ft"].get("kept_start") else f"epoch {stages['ft']['best_epoch']}"
        lines.append(f"| {name} | {cell.note} | {val:.4f} | {base:.4f} | {100 * (base - val) / base:+.1f} % | "
                     f"{readout} | {ft} | {_minutes(stages):.0f} |")
    return "\n".join([*lines, "", exp.report["footer"]])


def _corpus_table(exp) -> str:
    """Each target after alignment on (a) its own windows, (b) a mixed corpus, (c) synthetic series alone, read
    out by exact LP on the target's validation split."""
    lines = ["| target | alignment read | windows per epoch | alignment minutes | val MSE | rlinear val MSE | gain |",
             "|---|---|---|---|---|---|---|"]
    for group, arms in exp.report["corpus_rows"].items():
        for name, what in arms:
            run = _run(exp.results / name / "run.json")
            if run is None:
                lines.append(f"| {group} | {what} | (not run) | | | | |")
                continue
            align = run["stages"].get("align", {})
            if "corpus" in align:
                windows = " + ".join(f"{c['windows_per_epoch']:,} {c['source']}" for c in align["corpus"])
            elif align:
                windows = f"{sum(h['rank_windows'][0][0] for h in align['history'][:1]):,} (own)"
            else:
                windows = "-"
            val, base = run["stages"]["lp"]["val"]["mse"], rlinear_val(exp, group, [])
            lines.append(f"| {group} | {what} | {windows} | {align.get('wall_time_s', 0) / 60:.1f} | {val:.4f} | "
                         f"{base:.4f} | {100 * (base - val) / base:+.1f} % |")
    return "\n".join([*lines, "", exp.report["corpus_footer"]])


def sweep(exp) -> dict[str, str]:
    return {"table.md": _sweep_table(exp), "corpus.md": _corpus_table(exp)}


def scaling(exp) -> dict[str, str]:
    """Backbone x blocks K x pretrained/random, next to the sweep's recipe and scratch rows."""
    report = exp.report
    recipe_dir = Path(exp.path).resolve().parents[1] / report["recipe_rows"]

    def result(name: str) -> dict | None:
        run = _run(exp.results / name / "run.json")
        return run and {"val": run["stages"]["lp"]["val"]["mse"], "minutes": _minutes(run["stages"])}

    lines = []
    for group, title in report["titles"].items():
        base = rlinear_val(exp, group, [])
        lines += [f"**{title}** (rlinear on the same validation windows: {base:.4f})", "",
                  "| backbone | blocks K | pretrained val MSE | random val MSE | pretrained gain over rlinear | minutes |",
                  "|---|---|---|---|---|---|"]
        for backbone, total in report["backbones"].items():
            for k in (*report["depths"], total):
                pre = result(f"{group}-{backbone}-k{k}-pretrained")
                rnd = result(f"{group}-{backbone}-k{k}-random")
                if k == total and pre is None:
                    continue
                shown = [f"{r['val']:.4f}" if r else "(not run)" for r in (pre, rnd)]
                gain = f"{100 * (base - pre['val']) / base:+.1f} %" if pre else ""
                minutes = " / ".join(f"{r['minutes']:.1f}" for r in (pre, rnd) if r)
                lines.append(f"| {backbone} | {k}{' (all)' if k == total else ''} | {shown[0]} | {shown[1]} | {gain} "
                             f"| {minutes} |")
        for arm, what in ((f"{group}-k2-a3", "the default recipe: smollm2-135m, 2 blocks, 3 alignment epochs, exact LP"),
                          (f"{group}-scratch-k2-a3-ft", "the same 2 blocks trained from scratch (alignment, exact LP, FT)")):
            run = _run(recipe_dir / arm / "run.json")
            if run is not None:
                lines.append(f"| {what} ({report['recipe_rows']}/{arm}) | 2 | {_last(run['stages'])[1]['val']['mse']:.4f} "
                             "| | | |")
        lines.append("")
    return {"table.md": "\n".join([*lines, report["footer"]])}


RENDERERS = {"accuracy": accuracy, "sweep": sweep, "scaling": scaling, "ablation": ablation}  # what `table:` may name
