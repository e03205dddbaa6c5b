"""`tempo-compare`: aggregate run directories into a markdown/HTML report with plots."""

from __future__ import annotations

import argparse
import logging
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
    parser.add_argument(
        "--baseline",
        metavar="LABEL",
        help="a method label (e.g. fixed): also report every other method's per-seed "
        "differences against it (t and bootstrap intervals, wins, seeds needed) and a figure",
    )
    return parser.parse_args(argv)


_LOGGER = "tempo.reporting"


def _print_warnings() -> logging.Handler:
    """Show the reporting library's warnings (unreadable lines and files) on stderr, one line
    each: ``tempo-compare: warning: <file>: <problem>``; undone by `_stop_printing`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("tempo-compare: warning: %(message)s"))
    handler.setLevel(logging.WARNING)
    logging.getLogger(_LOGGER).addHandler(handler)
    logging.getLogger(_LOGGER).propagate = False
    return handler


def _stop_printing(handler: logging.Handler) -> None:
    logging.getLogger(_LOGGER).removeHandler(handler)
    logging.getLogger(_LOGGER).propagate = True


def main(argv: list[str] | None = None) -> int:
    """Entry point; exit code 2 with a one-line message for bad input. Bad files inside runs
    are warnings (stderr) and notes in the report, never an error."""
    args = parse_args(argv)
    handler = _print_warnings()
    try:
        written = compare(args.dirs, args.out, args.metrics, args.baseline)
    except ReportError as err:
        print(f"tempo-compare: {err}", file=sys.stderr)
        return 2
    finally:
        _stop_printing(handler)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
