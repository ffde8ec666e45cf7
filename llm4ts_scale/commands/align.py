"""`llm4ts-scale align`: the alignment stage alone, written as an aligned backbone (RUN_DIR/align/export/)
that later runs start from with `model.aligned_from=RUN_DIR` (llm4ts_scale/train/aligned.py).

    llm4ts-scale align --config FILE [key=value ...]        # e.g. stages.align.data=[ETTh1,synthetic:kernelsynth]
    accelerate launch -m llm4ts_scale.cli align --ds ds_configs/zero2.json ...   # on several processes

The same run directory and resume rules as `train`: re-running resumes the alignment stage, and `train`
with the same config continues the run at linear probing.
"""

from __future__ import annotations

from llm4ts_scale.core.config import add_run_arguments, load_config
from llm4ts_scale.core.errors import UserError


def run(args) -> int:
    from llm4ts_scale.core.log import set_verbosity
    from llm4ts_scale.train.manager import train

    set_verbosity(args.quiet, args.verbose)
    config = load_config(args.config, args.overrides)
    if "align" not in config.active_stages():
        raise UserError("llm4ts-scale align needs stages.align.epochs > 0 and no model.aligned_from")
    train(config, ds_config=args.ds, restart=args.restart, stop_after="align")
    return 0


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("align", help="run the alignment stage alone and write the aligned backbone",
                                   description=__doc__)
    add_run_arguments(parser)
    parser.set_defaults(handler=run)
