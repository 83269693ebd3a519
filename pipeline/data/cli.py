"""`taxifare data synth`: synthetic trips of the learned city (see pipeline/data/synth.py).

Exit codes: 0 written; 2 a bad argument or an output folder that is not empty (nothing
written). `taxifare data oracle` scores the best possible model on a split of those trips
(see pipeline/data/oracle.py).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import Any

EXIT_OK = 0
EXIT_USAGE = 2


def add_data_parsers(subparsers: Any) -> dict[str, Callable[[argparse.Namespace], int]]:
    """Registers `data` (with its `synth` and `oracle` subcommands) on the `taxifare` subparsers."""
    from pipeline.data.scenarios import SCENARIOS
    from pipeline.data.synth import SynthSpec

    defaults = SynthSpec(rows=1, out="")
    data = subparsers.add_parser("data", help="make data sets: synthetic trips of the city")
    sub = data.add_subparsers(
        dest="data_command",
        required=True,
        metavar="COMMAND",
        help="synth: write trips; oracle: score the best model on them",
    )
    synth = sub.add_parser(
        "synth",
        help="write synthetic trips learned from the real sample, in monthly span folders",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    synth.add_argument("--rows", type=int, required=True, help="trips to write, over all spans")
    synth.add_argument(
        "--out", required=True, help="a new or empty folder (local or gs://) for the spans"
    )
    synth.add_argument(
        "--shards", type=int, default=defaults.shards, help="CSV files per span (default: 1)"
    )
    synth.add_argument(
        "--seed", type=int, default=defaults.seed, help="random seed; same seed, same bytes"
    )
    synth.add_argument(
        "--months",
        type=int,
        default=defaults.months,
        help="spans, one per calendar month (default: %(default)s)",
    )
    synth.add_argument(
        "--start",
        help="first month as YYYY-MM (default: the months end with the sample's last month)",
    )
    synth.add_argument(
        "--scenario",
        default=defaults.scenario,
        choices=sorted(SCENARIOS),
        help="a named change to the city, for drift tests (default: none; see data/README.md)",
    )
    synth.add_argument(
        "--floor-draws",
        type=int,
        default=defaults.floor_draws,
        help="Monte Carlo fares per trip for the RMSE floor (default: %(default)s)",
    )
    synth.add_argument(
        "--min-fare",
        type=float,
        default=defaults.min_fare,
        help="label range of the floor: above this fare (data.min_fare; default %(default)s)",
    )
    synth.add_argument(
        "--max-fare",
        type=float,
        default=defaults.max_fare,
        help="label range of the floor: at most this fare (data.max_fare; default %(default)s)",
    )
    synth.add_argument("--verbose", action="store_true", help="print progress per million rows")
    _add_oracle_parser(sub)
    return {"data": cmd_data}


def _add_oracle_parser(sub: Any) -> None:
    oracle = sub.add_parser(
        "oracle",
        help="the best possible RMSE on a split of synthetic trips (tf.Examples), with its error",
        description=(
            "Scores the oracle E[fare | booking-time fields], estimated by the generator's own"
            " draws, on every trip of a split of tf.Examples (TFRecord files, e.g. the test"
            " split the pipeline evaluated on), beside the floor of the same rows. Prints one"
            " JSON line. Exit codes: 0 scored; 2 bad arguments or unreadable input."
        ),
    )
    oracle.add_argument(
        "--examples", nargs="+", required=True, help="TFRecord files or globs (local or gs://)"
    )
    oracle.add_argument(
        "--synth", required=True, help="the `taxifare data synth` folder the trips came from"
    )
    oracle.add_argument(
        "--min-fare", type=float, help="label range: above this fare (default: the manifest's)"
    )
    oracle.add_argument(
        "--max-fare", type=float, help="label range: at most this fare (default: the manifest's)"
    )
    oracle.add_argument(
        "--draws", type=int, default=64, help="Monte Carlo fares per trip (default: %(default)s)"
    )
    oracle.add_argument("--seed", type=int, default=0, help="the draws' seed (default: 0)")


def cmd_data(args: argparse.Namespace) -> int:
    """`taxifare data synth` and `taxifare data oracle`."""
    if args.data_command == "oracle":
        return cmd_oracle(args)
    from pipeline.data.city import CityError, sample_city
    from pipeline.data.synth import SynthError, SynthSpec, parse_month, synthesize

    start = time.monotonic()
    try:
        spec = SynthSpec(
            rows=args.rows,
            out=args.out,
            shards=args.shards,
            seed=args.seed,
            months=args.months,
            start=parse_month(args.start) if args.start else None,
            scenario=args.scenario,
            floor_draws=args.floor_draws,
            min_fare=args.min_fare,
            max_fare=args.max_fare,
        )
        city = sample_city()
        done = [0]

        def progress(rows: int) -> None:
            before = done[0] // 1_000_000
            done[0] += rows
            if args.verbose and done[0] // 1_000_000 > before:
                print(f"taxifare: {done[0]:,} rows", file=sys.stderr, flush=True)

        manifest = synthesize(spec, city, on_rows=progress)
    except (SynthError, CityError) as e:
        print(f"taxifare: {e}; nothing was written", file=sys.stderr)
        return EXIT_USAGE
    seconds = time.monotonic() - start
    spans = manifest["spans"]
    print(
        f"taxifare: wrote {spec.rows:,} trips in {len(spans)} span(s)"
        f" ({spans[0]['month']} to {spans[-1]['month']}) to {spec.out} in {seconds:.1f} s;"
        f" scenario {spec.scenario}; RMSE floor of the latest span"
        f" {_pm(spans[-1], 'rmse_floor_label_range')}, oracle"
        f" {_pm(spans[-1], 'rmse_oracle_label_range')} (fares in ({spec.min_fare:g},"
        f" {spec.max_fare:g}]), manifest {spec.out.rstrip('/')}/synth.json",
        file=sys.stderr,
    )
    return EXIT_OK


def _pm(span: dict, key: str) -> str:
    value, se = span.get(key), span.get(f"{key}_se")
    if value is None:
        return "-"
    return f"{value:.3f}" + (f" +- {se:.3f}" if se is not None else "")


def cmd_oracle(args: argparse.Namespace) -> int:
    """`taxifare data oracle`: prints the oracle's score of a split as one JSON line."""
    import json

    from pipeline.data.city import CityError
    from pipeline.data.oracle import OracleError, load_manifest, score_examples

    try:
        manifest = load_manifest(args.synth)
        low, high = manifest.get("label_range", (None, None))
        low = args.min_fare if args.min_fare is not None else low
        high = args.max_fare if args.max_fare is not None else high
        if low is None or high is None:
            raise OracleError(f"{args.synth}: the manifest has no label_range; give both fares")
        score = score_examples(args.examples, manifest, (low, high), args.draws, args.seed)
    except (OracleError, CityError) as e:
        print(f"taxifare: {e}", file=sys.stderr)
        return EXIT_USAGE
    print(json.dumps(score.as_dict()), flush=True)
    return EXIT_OK
