"""``python -m nptransformer.experiments NAME [--json OUT] [--plot OUT.png] [--quick]``

Runs one experiment with its default settings, prints its progress and then its tables (the
markdown of docs/experiments.md); ``--json`` writes the returned dict, ``--plot`` its figure, ``--quick`` the tiny settings the tests use (seconds, not
minutes; the numbers then mean nothing). Names: perplexity, transfer, ner, few-shot.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from ..data.files import write_text_atomically
from . import EXPERIMENTS, PLOTS, QUICK_SETTINGS, TABLES


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nptransformer.experiments",
                                     description="Run one of the measured experiments (docs/experiments.md).")
    parser.add_argument("name", choices=sorted(EXPERIMENTS), help="which experiment")
    parser.add_argument("--json", metavar="OUT", help="write the results to this JSON file")
    parser.add_argument("--plot", metavar="OUT.png", help="write the experiment's figure to this PNG file")
    parser.add_argument("--quick", action="store_true", help="tiny settings (a smoke test; the numbers mean nothing)")
    args = parser.parse_args(argv)
    if args.plot and args.name not in PLOTS:
        parser.error(f"experiment {args.name!r} has no figure; --plot is for {', '.join(sorted(PLOTS))}")
    start = time.perf_counter()
    result = EXPERIMENTS[args.name](**(QUICK_SETTINGS[args.name] if args.quick else {}))
    print(f"\n{TABLES[args.name](result)}")
    print(f"{args.name}: {time.perf_counter() - start:.1f} s")
    if args.json:
        write_text_atomically(args.json, json.dumps(result, indent=1) + "\n", what="results file")
        print(f"wrote {args.json}")
    if args.plot:
        PLOTS[args.name](result, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
