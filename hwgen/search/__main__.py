"""`python -m hwgen.search MODEL --data DATA --trials N`: the search command before the CLI wires it."""

from __future__ import annotations

import argparse
import sys

from hwgen.errors import HwgenError
from hwgen.search.command import add_parser, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hwgen")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["search", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except HwgenError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
