"""``python -m bench --scale``: our pipeline on 200k and 2M synthetic trips, TFX's example on 2M.

Synthesizes one monthly span of each size with ``taxifare data synth`` (a single span, so
every row is read), runs our pipeline on each and TFX's ``taxi_pipeline_native_keras.py``,
unmodified, on the 2M rows (its CsvExampleGen reads the same files), and writes the
"Scale" section of BENCHMARKS.md: wall time per component (from each run's MLMD), rows/s,
peak RSS of the largest process and of the whole process tree, and our eval RMSE against
the oracle's on the same test rows (E[fare | booking-time fields] by the generator's own
draws, pipeline/data/oracle.py: the best RMSE any model of those fields can reach), beside
the generator's floor of the whole span.

Targets are reported, not asserted: ours on 2M at most 0.5x TFX's wall time, the largest
process under 4 GiB, t(2M) / t(200k) at most 10, eval RMSE within 5% of the oracle's.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bench import machine, ours, reference, trainer_input
from bench.measure import Measurement, run_measured
from bench.tree_sampler import TreePeak

ROWS = (200_000, 2_000_000)
# The pipeline's default label range (config data.min_fare, data.max_fare).
DEFAULT_LABEL_RANGE = (0.0, 250.0)
SEED = 13
SHARD_ROWS = 500_000
SECTION_TITLE = "## Scale: synthetic trips, 200k and 2M rows"
GIB = 2**30


@dataclass
class ScaleRun:
    """One measured pipeline run on `rows` synthetic trips."""

    name: str
    rows: int
    run: Measurement
    components: dict[str, float] = field(default_factory=dict)
    eval_rmse: float | None = None
    floor: float | None = None
    examples_trained: int | None = None  # examples the Trainer went through (steps x batch)
    # The oracle's RMSE (and standard error) on the rows the eval RMSE was measured on.
    oracle_rmse: float | None = None
    oracle_se: float | None = None
    oracle_rows: int | None = None

    def save(self, path: Path) -> None:
        """Writes the run's figures, so that a later `--scale` with the same `--scale-dir`
        reports this run instead of running it again."""
        run = asdict(self.run)
        run["command"] = list(self.run.command)
        run["stdout_path"], run["stderr_path"] = (
            str(self.run.stdout_path),
            str(self.run.stderr_path),
        )
        figures = {
            "name": self.name, "rows": self.rows, "run": run, "components": self.components,
            "eval_rmse": self.eval_rmse, "floor": self.floor,
            "examples_trained": self.examples_trained, "oracle_rmse": self.oracle_rmse,
            "oracle_se": self.oracle_se, "oracle_rows": self.oracle_rows,
        }  # fmt: skip
        path.write_text(json.dumps(figures, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> ScaleRun:
        """The inverse of `save`."""
        figures = json.loads(path.read_text())
        run = figures["run"]
        measurement = Measurement(
            **{
                **run,
                "command": tuple(run["command"]),
                "tree": TreePeak(**run["tree"]),
                "stdout_path": Path(run["stdout_path"]),
                "stderr_path": Path(run["stderr_path"]),
            }
        )
        return cls(
            figures["name"], figures["rows"], measurement, figures["components"],
            figures["eval_rmse"], figures["floor"], figures.get("examples_trained"),
            figures.get("oracle_rmse"), figures.get("oracle_se"), figures.get("oracle_rows"),
        )  # fmt: skip


def _saved_or_run(
    path: Path, run: Callable[[], ScaleRun], notes: list[str] | None = None
) -> ScaleRun:
    """The run saved at `path` by an earlier benchmark in the same folder (said in `notes`,
    with when it was saved), else `run()`, saved there once it has finished."""
    if path.exists():
        print(f"bench: reusing the finished run in {path}", flush=True)
        saved = ScaleRun.load(path)
        if notes is not None:
            saved_at = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
            notes.append(
                f"{saved.name}: measured by an earlier `--scale` on the same folder, saved"
                f" {saved_at:%Y-%m-%d %H:%M} UTC, and reused here."
            )
        return saved
    result = run()
    result.save(path)
    return result


def config_label_range(config: str) -> tuple[float, float]:
    """(data.min_fare, data.max_fare) of the config the pipeline runs with."""
    from pipeline.config import load_config

    data = load_config(config).data
    return data.min_fare, data.max_fare


def synth_command(rows: int, out: Path, label_range: tuple[float, float]) -> list[str]:
    """`taxifare data synth` of one span, its floor on the pipeline's label range."""
    shards = max(1, rows // SHARD_ROWS)
    return [
        sys.executable, "-m", "pipeline", "data", "synth", "--rows", str(rows), "--out",
        str(out), "--months", "1", "--shards", str(shards), "--seed", str(SEED),
        "--min-fare", str(label_range[0]), "--max-fare", str(label_range[1]),
    ]  # fmt: skip


def synthesize(
    rows: int, out: Path, label_range: tuple[float, float] = DEFAULT_LABEL_RANGE
) -> tuple[dict, float]:
    """Writes one span of `rows` trips with the CLI; returns the manifest and seconds."""
    command = synth_command(rows, out, label_range)
    start = time.monotonic()
    subprocess.run(command, check=True)
    seconds = time.monotonic() - start
    return json.loads((out / "synth.json").read_text()), seconds


def _synthesized(
    rows: int,
    data: Path,
    workspace: Path,
    synth_seconds: dict[int, float],
    notes: list[str],
    label_range: tuple[float, float] = DEFAULT_LABEL_RANGE,
) -> dict:
    """The manifest of `rows` trips in `data`, synthesized unless an earlier run left them.

    The synthesis time goes to `synth_seconds`: measured now, or, for data reused from an
    earlier ``--scale`` on the same folder, the time that run measured (said in `notes`)."""
    timing = workspace / f"synth-{rows}.seconds.json"
    if (data / "synth.json").exists():
        manifest = json.loads((data / "synth.json").read_text())
        if timing.exists():
            synth_seconds[rows] = float(json.loads(timing.read_text())["seconds"])
            saved_at = datetime.fromtimestamp(timing.stat().st_mtime, timezone.utc)
            notes.append(
                f"Synthesis of {rows:,} rows: timed by an earlier `--scale` on the same folder,"
                f" {saved_at:%Y-%m-%d %H:%M} UTC, and reused here."
            )
        return manifest
    manifest, seconds = synthesize(rows, data, label_range)
    synth_seconds[rows] = seconds
    timing.write_text(json.dumps({"rows": rows, "seconds": seconds}) + "\n")
    return manifest


def component_seconds(metadata: Path) -> dict[str, float]:
    """Wall seconds of each node's execution, read from an MLMD SQLite file."""
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    node_type = {t.id for t in store.get_context_types() if t.name == "node"}
    seconds: dict[str, float] = {}
    for execution in store.get_executions():
        nodes = [c for c in store.get_contexts_by_execution(execution.id) if c.type_id in node_type]
        if not nodes:
            continue
        node = nodes[0].name.split(".", 1)[-1]
        spent = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1e3
        seconds[node] = seconds.get(node, 0.0) + spent
    return seconds


def _check(run: Measurement, completed: tuple[int, ...]) -> None:
    if run.returncode not in completed:
        raise RuntimeError(
            f"the {run.name} run exited with {run.returncode} after {run.wall_seconds:.0f} s:\n"
            + run.stderr_tail()
        )


def run_ours(rows: int, data: Path, workspace: Path, config: str, timeout: float) -> ScaleRun:
    """Our pipeline on the synthesized span (the default config, the data overridden)."""
    root = workspace / f"ours-{rows}" / "root"
    root.mkdir(parents=True)
    command = ours.command(Path(config), root) + [
        "--set", f"data.input={data}", "--set", "data.pattern=span-{SPAN}/*.csv",
    ]  # fmt: skip
    print(f"bench: our pipeline on {rows:,} rows ...", flush=True)
    run = run_measured(
        f"ours-{rows}", command, cwd=Path.cwd(), env=ours.environment(),
        log_dir=workspace / "logs", timeout_seconds=timeout,
    )  # fmt: skip
    _check(run, ours.COMPLETED_EXIT_CODES)
    summary = json.loads((root / ours.SUMMARY_FILE).read_text())
    result = ScaleRun(
        f"ours, {rows:,} rows",
        rows,
        run,
        component_seconds(root / "metadata.sqlite"),
        eval_rmse=summary.get("eval_rmse"),
        examples_trained=(summary.get("training") or {}).get("examples_trained"),
    )
    score_oracle(result, summary, data, config)
    return result


def score_oracle(run: ScaleRun, summary: dict, data: Path, config: str) -> None:
    """Sets the oracle's RMSE on the split the run's eval RMSE was measured on (FareFilter's
    output, the Evaluator's split), with the config's label range."""
    from pipeline.data.oracle import load_manifest, score_examples

    if not summary.get("examples_uri") or not summary.get("eval_split"):
        return
    patterns = [
        # A string join: the URI may be gs://, which Path would fold to gs:/.
        "/".join((summary["examples_uri"].rstrip("/"), f"Split-{split}", "*"))
        for split in summary["eval_split"].split(",")
    ]
    print(f"bench: the oracle on {', '.join(patterns)} ...", flush=True)
    score = score_examples(patterns, load_manifest(str(data)), config_label_range(config))
    run.oracle_rmse, run.oracle_se, run.oracle_rows = (
        score.rmse_oracle, score.rmse_oracle_se, score.rows_scored
    )  # fmt: skip


def run_reference(rows: int, data: Path, workspace: Path, timeout: float) -> ScaleRun:
    """TFX's example, unmodified, with the synthesized files as its data folder."""
    example = reference.find_reference()
    home = workspace / f"reference-{rows}" / "home"
    reference.prepare_home(example, home)
    folder = home / "taxi" / "data" / "simple"
    (folder / "data.csv").unlink()
    for path in sorted(data.glob("span-*/*.csv")):
        (folder / path.name).symlink_to(path)
    print(f"bench: TFX's {reference.PIPELINE_SCRIPT} on {rows:,} rows ...", flush=True)
    run = run_measured(
        f"reference-{rows}", reference.command(example), cwd=home,
        env=reference.environment(home), log_dir=workspace / "logs", timeout_seconds=timeout,
    )  # fmt: skip
    _check(run, (0,))
    metadata = home / "tfx" / "metadata" / reference.PIPELINE_NAME / "metadata.db"
    return ScaleRun(
        f"TFX example, {rows:,} rows",
        rows,
        run,
        component_seconds(metadata),
        examples_trained=example.examples_trained,
    )


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def render_section(
    runs: list[ScaleRun],
    synth_seconds: dict[int, float],
    notes: list[str],
    trainer: trainer_input.TrainerInputRun | None = None,
    trainer_note: str = "it runs after the pipeline runs",
) -> list[str]:
    """The markdown of the scale section (`trainer`: the Trainer-input row's measurement)."""
    lines = [SECTION_TITLE, ""]
    m = machine.describe()
    lines.append(
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {m.cpu_model},"
        f" {m.logical_cores} logical cores, {m.memory_bytes / GIB:.0f} GiB."
    )
    timed = ", ".join(
        f"{rows:,} rows in {s:.1f} s ({rows / s:,.0f} rows/s)" for rows, s in synth_seconds.items()
    )
    untimed = sorted({r.rows for r in runs} - set(synth_seconds))
    if untimed:
        timed += ("; " if timed else "") + (
            ", ".join(f"{rows:,}" for rows in untimed)
            + " rows synthesized by an earlier run in the same folder, not timed here"
        )
    lines += ["", f"Synthesis (`taxifare data synth`, one span, seed {SEED}): {timed}", ""]
    lines += [
        "| run | wall | rows/s | peak RSS, largest process | peak RSS, process tree |"
        " eval RMSE | oracle, same rows | RMSE / oracle | floor of the span |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        rmse = f"{r.eval_rmse:.3f}" if r.eval_rmse is not None else "-"
        floor = f"{r.floor:.3f}" if r.floor is not None else "-"
        best = (
            f"{r.oracle_rmse:.3f} +- {r.oracle_se:.3f}"
            if r.oracle_rmse is not None and r.oracle_se is not None
            else "-"
        )
        ratio = _ratio(r.eval_rmse, r.oracle_rmse) if r.eval_rmse and r.oracle_rmse else "-"
        lines.append(
            f"| {r.name} | {r.run.wall_seconds:,.0f} s | {r.rows / r.run.wall_seconds:,.0f} |"
            f" {r.run.max_rss_bytes / GIB:.2f} GiB | {r.run.tree.total_bytes / GIB:.2f} GiB |"
            f" {rmse} | {best} | {ratio} | {floor} |"
        )
    nodes: list[str] = []
    for r in runs:
        nodes += [n for n in r.components if n not in nodes]
    lines += ["", "Wall seconds per component (MLMD execution start to end):", ""]
    lines.append("| component | " + " | ".join(r.name for r in runs) + " |")
    lines.append("|---" * (len(runs) + 1) + "|")
    for node in nodes:
        cells = [f"{r.components[node]:,.0f}" if node in r.components else "-" for r in runs]
        lines.append(f"| {node} | " + " | ".join(cells) + " |")
    if any(r.examples_trained for r in runs):
        cells = [f"{r.examples_trained:,}" if r.examples_trained else "-" for r in runs]
        lines.append("| examples trained (steps x batch) | " + " | ".join(cells) + " |")
    by_name = {(r.name.startswith("ours"), r.rows): r for r in runs}
    small, large = by_name.get((True, ROWS[0])), by_name.get((True, ROWS[1]))
    ref = by_name.get((False, ROWS[1]))
    lines += ["", "| target | measured | goal | met |", "|---|---|---|---|"]
    if large and ref:
        ratio = large.run.wall_seconds / ref.run.wall_seconds
        lines.append(f"| ours / TFX example wall time, 2M rows | {ratio:.2f} | <= 0.5 |"
                     f" {_yes_no(ratio <= 0.5)} |")  # fmt: skip
    if large:
        rss = large.run.max_rss_bytes / GIB
        lines.append(f"| peak RSS of our largest process, 2M rows | {rss:.2f} GiB | < 4 GiB |"
                     f" {_yes_no(rss < 4)} |")  # fmt: skip
    if small and large:
        growth = large.run.wall_seconds / small.run.wall_seconds
        lines.append(f"| t(2M) / t(200k), ours | {growth:.2f} | <= 10 |"
                     f" {_yes_no(growth <= 10)} |")  # fmt: skip
    if large and large.eval_rmse and large.oracle_rmse:
        ratio = large.eval_rmse / large.oracle_rmse
        lines.append(f"| eval RMSE / oracle RMSE on the same test rows, 2M rows | {ratio:.3f} |"
                     f" <= 1.05 | {_yes_no(ratio <= 1.05)} |")  # fmt: skip
    elif large and large.eval_rmse:
        lines.append("| eval RMSE / oracle RMSE on the same test rows, 2M rows | to be"
                     " re-measured (no oracle on the run's test rows) | <= 1.05 | - |")  # fmt: skip
    lines.append(trainer_input.scale_row(trainer, trainer_note))
    lines += [""] + [f"- {n}" for n in notes] + [""] if notes else [""]
    lines += [
        "The oracle is E[fare | booking-time fields] by the generator's own draws"
        " (`taxifare data oracle`), scored on the test split the Evaluator measured the eval"
        " RMSE on, over the config's label range (+- its standard error: the fares' long tail"
        " makes any RMSE on a split that noisy, a model's and the oracle's alike, and on the"
        " same rows the two move together). The floor is `rmse_floor_label_range` of the span"
        " in the generator's `synth.json`, an expectation over the whole span: a split can be"
        " a few standard errors below it by luck. Peak RSS of the largest process is getrusage's"
        " (bench/rss_wrapper.py); of the tree, psutil samples every 0.5 s. The machine is"
        " shared: compare runs of one measurement only.",
        "",
    ]
    return lines


def write_section(path: Path, lines: list[str]) -> None:
    """Replaces (or appends) the scale section of the report file."""
    text = path.read_text() if path.exists() else ""
    body = "\n".join(lines).rstrip("\n") + "\n"
    if SECTION_TITLE in text:
        head, rest = text.split(SECTION_TITLE, 1)
        after = rest.find("\n## ")
        tail = rest[after + 1 :] if after >= 0 else ""
        text = head + body + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text)


def main(args: argparse.Namespace) -> int:
    """Runs the scale benchmark; returns the exit code."""
    rows_list = [int(r) for r in args.scale_rows.split(",")] if args.scale_rows else list(ROWS)
    workspace = args.scale_dir or Path(tempfile.mkdtemp(prefix="taxifare-scale-"))
    workspace.mkdir(parents=True, exist_ok=True)
    runs: list[ScaleRun] = []
    synth_seconds: dict[int, float] = {}
    notes: list[str] = []
    try:
        for rows in rows_list:
            data = workspace / f"synth-{rows}"
            label_range = config_label_range(args.config)
            manifest = _synthesized(rows, data, workspace, synth_seconds, notes, label_range)
            if tuple(manifest.get("label_range", ())) != label_range:
                notes.append(
                    f"The {rows:,}-row data's floor is over fares in"
                    f" {manifest.get('label_range')}, not the config's {label_range}: the floor"
                    " column is not comparable; the oracle is scored on the config's."
                )
            floor = manifest["spans"][-1]["rmse_floor_label_range"]

            def ours_run(rows: int = rows, data: Path = data, floor: float = floor) -> ScaleRun:
                run = run_ours(rows, data, workspace, args.config, args.timeout)
                run.floor = floor
                return run

            runs.append(_saved_or_run(workspace / f"ours-{rows}.json", ours_run, notes))
            write_section(args.output, render_section(runs, synth_seconds, notes))
            if rows == max(rows_list) and not args.skip_reference:
                runs.append(
                    _saved_or_run(
                        workspace / f"reference-{rows}.json",
                        lambda rows=rows, data=data: run_reference(
                            rows, data, workspace, args.timeout
                        ),
                        notes,
                    )
                )
                write_section(args.output, render_section(runs, synth_seconds, notes))
        # The Trainer's streamed input on the smallest span, after the runs, in this process,
        # once what the runs left behind has exited (it is a ratio of two CPU-bound timings).
        waited = machine.wait_until_idle()
        print(f"bench: waited {waited:.0f} s for an idle machine", flush=True)
        trips = sorted(str(p) for p in (workspace / f"synth-{min(rows_list)}").glob("span-*/*.csv"))
        trainer = trainer_input.run_on_trips(
            trips, workspace / "trainer-input", lambda line: print(f"bench: {line}", flush=True)
        )
        write_section(args.output, render_section(runs, synth_seconds, notes, trainer))
        print("\n".join(trainer_input.summary_lines(trainer)))
    except (RuntimeError, subprocess.CalledProcessError) as err:
        print(f"bench: error: {err}", file=sys.stderr)
        notes.append(f"incomplete: {str(err).splitlines()[0]}")
        write_section(args.output, render_section(runs, synth_seconds, notes))
        return 1
    finally:
        if not args.keep and args.scale_dir is None:
            shutil.rmtree(workspace, ignore_errors=True)
        else:
            print(f"bench: kept the scale runs in {workspace}", file=sys.stderr)
    print(f"bench: wrote the scale section of {args.output}")
    return 0
