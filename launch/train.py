"""Main job: `accelerate launch launch/train.py --ds ds_configs/zero2.json [--config FILE] [key=value ...]`.

Also runs as `python launch/train.py ...` (one process) and is the same entry as `llm4ts-scale train`.
"""

import argparse
import sys

from llm4ts_scale.commands.train import add_arguments, run
from llm4ts_scale.errors import exit_on_user_error


@exit_on_user_error
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="launch/train.py", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
