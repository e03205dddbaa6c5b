"""`tempo-compare`: aggregate run directories into a markdown/HTML report with plots."""

from __future__ import annotations

import argparse
import sys

from tempo.reporting import ReportError, compare


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="tempo-compare",
        description="Compare temperature methods across runs and seeds (mean ± 95% CI, plots).",
    )
    parser.add_argument(
        "dirs", nargs="+", metavar="DIR", help="run directories, or folders holding them"
    )
    parser.add_argument("--out", default="comparison", help="output folder (default: ./comparison)")
    parser.add_argument(
        "--metrics",
        nargs="+",
        metavar="KEY",
        help="metric keys to tabulate instead of the default set (e.g. train/accuracy)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 2 with a one-line message for bad input."""
    args = parse_args(argv)
    try:
        written = compare(args.dirs, args.out, args.metrics)
    except ReportError as err:
        print(f"tempo-compare: {err}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
