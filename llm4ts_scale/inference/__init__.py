"""After training: the export layout (export), loading a run or export (loading), re-scoring it (evaluate_run),
forecasting new histories (predict), report.md with its plots (report, report_plots, step_errors) and the
small result files benchmarks keep (results)."""
