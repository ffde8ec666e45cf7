"""Linear probing solved in closed form (stages.lp.solver=exact, the default): the head is the ridge optimum on the
frozen features, its penalties chosen on validation. No optimizer, scheduler or checkpoint: the model is scored
as it is (under ZeRO-3 through an engine without optimizer, which gathers each module's weights for its forward).
"""

from __future__ import annotations

import time

from llm4ts_scale.train.accelerator import serving_engine
from llm4ts_scale.train.exact_probe import fit_exact_head
from llm4ts_scale.train.stage import StageRecipe, StageResult


class ExactProbeStage(StageRecipe):
    solver = "exact"

    def run(self) -> StageResult:
        """One pass over the windows, then the ridge search (llm4ts_scale/train/exact_probe.py). Atomic: a crash
        inside it re-runs it whole."""
        self.adopt(serving_engine(self.accelerator, self.build()))
        p = self.progress
        result = fit_exact_head(self)
        self.keep_if_best(result.val)
        p.history.append({"epoch": 1, "train_loss": result.train_loss, "val_loss": result.val["mse"],
                          "val_mae": result.val["mae"], **result.entry, "time_s": time.time() - self.started})
        chosen = ", ".join(f"{k} {result.entry[k]:.3g}" for k in ("alpha_linear", "alpha_llm")
                           if result.entry.get(k) is not None)
        self.log(f"exact head ({result.entry['method']}, {result.entry['features']} features, {chosen}): "
                 f"val {result.val['mse']:.5f}")
        p.epoch = 1
        return self.finish()
