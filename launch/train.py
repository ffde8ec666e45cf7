"""Main job: `accelerate launch launch/train.py --ds ds_configs/zero2.json [--config FILE] [key=value ...]`.

Also runs as `python launch/train.py ...` (one process) and is the same entry as `llm4ts-scale train`.
The run continues in llm4ts_scale/train/manager.py (data, stages, test, export) -> train/stage.py (one
stage's loop) -> llm4ts_scale/evaluation.py (scoring); docs/ARCHITECTURE.md section 2 has the map.
"""

import argparse
import sys

from llm4ts_scale.core.config import add_run_arguments, load_config
from llm4ts_scale.core.errors import exit_on_user_error
from llm4ts_scale.core.log import set_verbosity
from llm4ts_scale.core.versions import check_versions
from llm4ts_scale.train.manager import train


@exit_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="launch/train.py", description=__doc__)
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    check_versions()  # an installed library outside the declared range: one line, exit 2
    set_verbosity(args.quiet, args.verbose)
    train(load_config(args.config, args.overrides), ds_config=args.ds, restart=args.restart)
    return 0


if __name__ == "__main__":
    sys.exit(main())
