"""``python -m bench --scale``: ours on 200k to 20M synthetic trips, and TFX's example.

Synthesizes one monthly span of each size with ``taxifare data synth`` (a single span, so
every row is read), runs our pipeline on each and TFX's ``taxi_pipeline_native_keras.py``,
unmodified, on the largest size up to 2M rows (its CsvExampleGen reads the same files), and
writes the "Scale" section of BENCHMARKS.md: wall time per component (from each run's MLMD)
and per million rows, rows/s, peak RSS of the largest process and of the whole process
tree, the memory curves (sampled RSS over time, one SVG per size under ``bench/figures/``
beside the report), and our eval RMSE against the oracle's on the same test rows
(E[fare | booking-time fields] by the generator's own draws, pipeline/data/oracle.py: the
best RMSE any model of those fields can reach), beside the generator's floor of the span.

After our run at the reference's size, a second run of ours on the same root trains only as
many examples as TFX's example does (``training.train_steps``; the upstream components are
cached, MLMD says which), so the two are also compared at equal training work.

Above 2M rows the whole example is not run (at 2M its largest process already held 5.4 GiB
of this 24 GiB machine); its CsvExampleGen alone is, on the same rows, and stopped once its
process tree passes a memory cap (16 GiB) or a time cap (one hour), recording where it stood.

Targets are reported, not asserted (see `TARGETS`); a target without its runs reads "not
measured".
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from bench import machine, ours, reference, trainer_input
from bench.measure import STOPPED_BY_MEMORY, STOPPED_BY_TIMEOUT, Measurement, run_measured
from bench.tree_sampler import LimitReached, Sample, TreePeak

ROWS = (200_000, 2_000_000)
# The most rows the whole TFX example is run on; above, its CsvExampleGen alone, capped.
REFERENCE_MAX_ROWS = 2_000_000
# The size of the large-scale targets (largest process, growth from REFERENCE_MAX_ROWS).
LARGE_ROWS = 20_000_000
# The pipeline's default label range (config data.min_fare, data.max_fare).
DEFAULT_LABEL_RANGE = (0.0, 250.0)
SEED = 13
SHARD_ROWS = 500_000
# `--timeout` is the budget of one run on this many rows; a larger run gets it in proportion.
TIMEOUT_ROWS = 2_000_000
# The caps of TFX's CsvExampleGen alone above REFERENCE_MAX_ROWS (whichever comes first).
DEFAULT_CAP_GIB = 16.0
DEFAULT_CAP_SECONDS = 3600.0
SECTION_TITLE = "## Scale: synthetic trips, 200k to 20M rows"
# Titles this section had before; `write_section` replaces a section under any of them.
OLD_SECTION_TITLES = ("## Scale: synthetic trips, 200k and 2M rows",)
# Where the memory curves are written, relative to the report's folder.
FIGURES_DIR = Path("bench", "figures")
GIB = 2**30

KIND_OURS = "ours"
KIND_BUDGET = "ours-budget"
KIND_REFERENCE = "reference"
KIND_EXAMPLE_GEN = "reference-example-gen"

# Our node ids (pipeline/dag.py) that a change of training length re-runs, and the
# Resolver, which runs on every run; everything else is expected from the cache.
BUDGET_RERUN = ("Trainer", "Evaluator", "Pusher")
ALWAYS_RUN = ("LatestBlessedModelResolver",)

# Targets of the issue: ours / TFX's whole-pipeline wall time and per stage, at the
# reference's size; RMSE / oracle there; at LARGE_ROWS the largest process and the growth.
WHOLE_GOAL = 0.7
STAGE_GOAL = 1.0
STAGES = ("StatisticsGen", "Transform", "Evaluator")
RMSE_GOAL = 1.05
RSS_GOAL_GIB = 4.0
GROWTH_GOAL = 10.0
# The Trainer's streamed input against model.fit on the same batches in memory.
TRAINER_INPUT_GOAL = 0.9
NOT_MEASURED = "not measured"


@dataclass
class ScaleRun:
    """One measured run on `rows` synthetic trips.

    `kind` says which: our pipeline (KIND_OURS), ours again at the TFX example's training
    budget on the same root (KIND_BUDGET, `budget` holding what was cached), TFX's whole
    example (KIND_REFERENCE) or its CsvExampleGen alone under the caps (KIND_EXAMPLE_GEN,
    `stood` holding where it was when it ended or was stopped). `training` is what the
    Trainer ran (its training.json record, or the example's steps and batch).
    """

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
    kind: str = KIND_OURS
    training: dict | None = None
    stood: dict | None = None
    budget: dict | None = None

    @property
    def wall_seconds(self) -> float:
        """The run's wall time; for a budget run, the cached components' seconds in the full
        run plus this run's own (see `budget_wall_seconds`)."""
        if self.kind == KIND_BUDGET and self.budget is not None:
            return budget_wall_seconds(self.run.wall_seconds, self.budget["cached"])
        return self.run.wall_seconds

    def save(self, path: Path) -> None:
        """Writes the run's figures, so that a later `--scale` with the same `--scale-dir`
        reports this run instead of running it again."""
        figures = {
            "name": self.name, "rows": self.rows, "run": _measurement_json(self.run),
            "components": self.components, "eval_rmse": self.eval_rmse, "floor": self.floor,
            "examples_trained": self.examples_trained, "oracle_rmse": self.oracle_rmse,
            "oracle_se": self.oracle_se, "oracle_rows": self.oracle_rows, "kind": self.kind,
            "training": self.training, "stood": self.stood, "budget": self.budget,
        }  # fmt: skip
        path.write_text(json.dumps(figures, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> ScaleRun:
        """The inverse of `save` (also of runs saved before kinds and RSS series were kept)."""
        figures = json.loads(path.read_text())
        kind = figures.get("kind") or (
            KIND_OURS if figures["name"].startswith("ours") else KIND_REFERENCE
        )
        return cls(
            figures["name"], figures["rows"], _measurement_from_json(figures["run"]),
            figures["components"], figures["eval_rmse"], figures["floor"],
            figures.get("examples_trained"), figures.get("oracle_rmse"),
            figures.get("oracle_se"), figures.get("oracle_rows"), kind,
            figures.get("training"), figures.get("stood"), figures.get("budget"),
        )  # fmt: skip


def _measurement_json(run: Measurement) -> dict:
    """A measurement as JSON, its RSS series as [seconds, tree bytes, largest bytes]."""
    figures = asdict(run)
    figures["command"] = list(run.command)
    figures["stdout_path"], figures["stderr_path"] = str(run.stdout_path), str(run.stderr_path)
    figures["rss_series"] = [
        [round(s.seconds, 2), s.total_bytes, s.largest_process_bytes] for s in run.rss_series
    ]
    return figures


def _measurement_from_json(figures: dict) -> Measurement:
    """The inverse of `_measurement_json`."""
    limit = figures.get("limit_reached")
    return Measurement(
        **{
            **figures,
            "command": tuple(figures["command"]),
            "tree": TreePeak(**figures["tree"]),
            "stdout_path": Path(figures["stdout_path"]),
            "stderr_path": Path(figures["stderr_path"]),
            "rss_series": tuple(Sample(*point) for point in figures.get("rss_series", ())),
            "limit_reached": LimitReached(**limit) if limit else None,
        }
    )


def budget_steps(examples: int, batch_size: int) -> int:
    """Training steps of `batch_size` that train on at least `examples` examples (the
    fewest such: one batch more only when the batch does not divide them)."""
    if examples < 1 or batch_size < 1:
        raise ValueError(f"examples ({examples}) and batch size ({batch_size}) must be >= 1")
    return math.ceil(examples / batch_size)


def budget_wall_seconds(own_seconds: float, cached: dict[str, float | None]) -> float:
    """A budget run's wall time: its own (start-up, cache look-ups, the components it ran)
    plus, for each component it took from the cache, that component's seconds in the run
    that computed it."""
    return own_seconds + sum(s for s in cached.values() if s is not None)


def timeout_for(rows: int, timeout_seconds: float) -> float:
    """The timeout of one run on `rows` rows: `timeout_seconds` up to TIMEOUT_ROWS rows,
    in proportion to the rows above."""
    return timeout_seconds * max(1.0, rows / TIMEOUT_ROWS)


def parse_rows(text: str | None) -> list[int]:
    """The row counts of ``--scale-rows`` (comma-separated), ascending; ROWS when not given.

    Raises:
        ValueError: naming the item that is not a positive whole number.
    """
    if not text:
        return list(ROWS)
    counts = []
    for item in text.split(","):
        try:
            count = int(item.strip())
        except ValueError:
            raise ValueError(f"--scale-rows: {item.strip()!r} is not a whole number") from None
        if count < 1:
            raise ValueError(f"--scale-rows: {count} rows; each count must be at least 1")
        counts.append(count)
    return sorted(set(counts))


def caps(args: argparse.Namespace) -> tuple[int, float]:
    """(bytes, seconds) at which TFX's CsvExampleGen alone is stopped: ``--scale-cap-gib``
    and ``--scale-cap-seconds`` where the command line has them, else 16 GiB and one hour.

    Raises:
        ValueError: naming the cap that is not positive.
    """
    gib = getattr(args, "scale_cap_gib", None)
    seconds = getattr(args, "scale_cap_seconds", None)
    gib = DEFAULT_CAP_GIB if gib is None else float(gib)
    seconds = DEFAULT_CAP_SECONDS if seconds is None else float(seconds)
    if not gib > 0:
        raise ValueError(f"--scale-cap-gib {gib:g}: the memory cap must be above 0")
    if not seconds > 0:
        raise ValueError(f"--scale-cap-seconds {seconds:g}: the time cap must be above 0")
    return int(gib * GIB), seconds


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
    if data.exists():
        # A synthesis stopped half-way left files but no manifest: start it again.
        print(f"bench: {data} has no synth.json (an unfinished synthesis); writing it again")
        shutil.rmtree(data)
    manifest, seconds = synthesize(rows, data, label_range)
    synth_seconds[rows] = seconds
    timing.write_text(json.dumps({"rows": rows, "seconds": seconds}) + "\n")
    return manifest


def run_executions(metadata: Path, run_id: str | None = None) -> dict[str, tuple[str, float]]:
    """Each node's (state, wall seconds) in an MLMD SQLite file: of the run `run_id` (its
    pipeline_run context), or of every run (seconds summed, the last execution's state).

    The state is MLMD's: COMPLETE, CACHED (taken from an earlier run), RUNNING (a run that
    was stopped), FAILED, ...
    """
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(metadata)
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READONLY
    store = metadata_store.MetadataStore(config)
    types = {t.id: t.name for t in store.get_context_types()}
    if run_id is None:
        executions = store.get_executions()
    else:
        context = store.get_context_by_type_and_name("pipeline_run", run_id)
        if context is None:
            raise RuntimeError(f"{metadata} has no pipeline run {run_id!r}")
        executions = store.get_executions_by_context(context.id)
    found: dict[str, tuple[str, float]] = {}
    for execution in sorted(executions, key=lambda e: e.create_time_since_epoch):
        nodes = [
            c.name for c in store.get_contexts_by_execution(execution.id)
            if types.get(c.type_id) == "node"
        ]  # fmt: skip
        if not nodes:
            continue
        node = nodes[0].split(".", 1)[-1]
        spent = (execution.last_update_time_since_epoch - execution.create_time_since_epoch) / 1e3
        state = metadata_store_pb2.Execution.State.Name(execution.last_known_state)
        found[node] = (state, found.get(node, ("", 0.0))[1] + spent)
    return found


def component_seconds(metadata: Path, run_id: str | None = None) -> dict[str, float]:
    """Wall seconds of each node's execution (see `run_executions`)."""
    return {node: seconds for node, (_, seconds) in run_executions(metadata, run_id).items()}


def _check(run: Measurement, completed: tuple[int, ...]) -> None:
    if run.returncode not in completed:
        raise RuntimeError(
            f"the {run.name} run exited with {run.returncode} after {run.wall_seconds:.0f} s:\n"
            + run.stderr_tail()
        )


def _data_overrides(data: Path) -> list[str]:
    return ["--set", f"data.input={data}", "--set", "data.pattern=span-{SPAN}/*.csv"]


def run_ours(rows: int, data: Path, workspace: Path, config: str, timeout: float) -> ScaleRun:
    """Our pipeline on the synthesized span (the default config, the data overridden)."""
    root = workspace / f"ours-{rows}" / "root"
    if root.parent.exists():
        # Left by a run that did not finish (a finished one is saved and reused instead).
        print(f"bench: removing {root.parent}, left by an unfinished run", flush=True)
        shutil.rmtree(root.parent)
    root.mkdir(parents=True)
    command = ours.command(Path(config), root) + _data_overrides(data)
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
        training=summary.get("training"),
    )
    score_oracle(result, summary, data, config)
    return result


def _backfill_training(run: ScaleRun, path: Path, workspace: Path) -> None:
    """Gives a run saved before the Trainer's record was kept that record, from its root's
    summary.json, and saves it again; only while no budget run has rewritten that summary."""
    root = workspace / f"ours-{run.rows}" / "root"
    budget = workspace / f"ours-{run.rows}-budget.json"
    if run.training is not None or budget.exists() or not (root / ours.SUMMARY_FILE).exists():
        return
    summary = json.loads((root / ours.SUMMARY_FILE).read_text())
    if summary.get("training"):
        run.training = summary["training"]
        run.save(path)


def config_batch_size(config: str) -> int:
    """training.batch_size of the config the pipeline runs with."""
    from pipeline.config import load_config

    return load_config(config).training.batch_size


def run_budget(
    full: ScaleRun,
    data: Path,
    workspace: Path,
    config: str,
    timeout: float,
    reference_examples: int,
) -> ScaleRun:
    """Ours again on the root of the `full` run, trained on the TFX example's budget.

    ``training.train_steps`` is set so that steps x batch covers `reference_examples`; the
    components upstream of the Trainer are unchanged, so the run takes them from its cache.
    Which ran and which were cached is read from MLMD (the run's pipeline_run context).
    """
    rows = full.rows
    root = workspace / f"ours-{rows}" / "root"
    if not (root / "metadata.sqlite").exists():
        raise RuntimeError(f"the budget run needs the {rows:,}-row run's root {root}; it is gone")
    batch = config_batch_size(config)
    steps = budget_steps(reference_examples, batch)
    command = ours.command(Path(config), root) + _data_overrides(data)
    command += ["--set", f"training.train_steps={steps}"]
    print(f"bench: our pipeline on {rows:,} rows at {steps} steps x {batch} ...", flush=True)
    run = run_measured(
        f"ours-{rows}-budget", command, cwd=Path.cwd(), env=ours.environment(),
        log_dir=workspace / "logs", timeout_seconds=timeout,
    )  # fmt: skip
    _check(run, ours.COMPLETED_EXIT_CODES)
    summary = json.loads((root / ours.SUMMARY_FILE).read_text())
    executions = run_executions(root / "metadata.sqlite", summary.get("run_id"))
    cached = {
        n: full.components.get(n) for n, (state, _) in executions.items() if state == "CACHED"
    }
    result = ScaleRun(
        f"ours at the TFX example's training budget, {rows:,} rows",
        rows,
        run,
        {n: seconds for n, (state, seconds) in executions.items() if state != "CACHED"},
        eval_rmse=summary.get("eval_rmse"),
        floor=full.floor,
        # What the Trainer ran: it trains whole epochs (rounds), so a cap that does not fill
        # the last one is rounded up to it.
        examples_trained=(summary.get("training") or {}).get("examples_trained", steps * batch),
        kind=KIND_BUDGET,
        training=summary.get("training"),
        budget={
            "steps": steps,
            "batch_size": batch,
            "reference_examples": reference_examples,
            "cached": cached,
            "states": {n: state for n, (state, _) in executions.items()},
            "baseline_evaluated": summary.get("baseline_rmse") is not None,
            "full_wall_seconds": full.run.wall_seconds,
        },
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


def _reference_home(
    name: str, data: Path, workspace: Path
) -> tuple[reference.ReferenceExample, Path]:
    """A fresh HOME laid out for TFX's example, its data folder holding `data`'s files."""
    example = reference.find_reference()
    home = workspace / name / "home"
    if home.exists():
        shutil.rmtree(home)  # left by a run that did not finish
    reference.prepare_home(example, home)
    folder = home / "taxi" / "data" / "simple"
    (folder / "data.csv").unlink()
    for path in sorted(data.glob("span-*/*.csv")):
        (folder / path.name).symlink_to(path)
    return example, home


def run_reference(rows: int, data: Path, workspace: Path, timeout: float) -> ScaleRun:
    """TFX's example, unmodified, with the synthesized files as its data folder."""
    example, home = _reference_home(f"reference-{rows}", data, workspace)
    print(f"bench: TFX's {reference.PIPELINE_SCRIPT} on {rows:,} rows ...", flush=True)
    run = run_measured(
        f"reference-{rows}", reference.command(example), cwd=home,
        env=reference.environment(home), log_dir=workspace / "logs", timeout_seconds=timeout,
    )  # fmt: skip
    _check(run, (0,))
    return ScaleRun(
        f"TFX example, {rows:,} rows",
        rows,
        run,
        component_seconds(reference.metadata_path(home)),
        examples_trained=example.examples_trained,
        kind=KIND_REFERENCE,
        training={"steps": example.train_steps, "batch_size": example.batch_size},
    )


def count_tfrecords(path: Path) -> int:
    """Whole records in a TFRecord file (gzipped if its name ends in .gz), counted by their
    framing; a file cut short (its writer stopped) counts the records before the cut."""
    count = 0
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            while True:
                header = fh.read(12)  # length (uint64 LE) and its CRC
                if len(header) < 12:
                    break
                (length,) = struct.unpack("<Q", header[:8])
                body = fh.read(length + 4)  # the record and its CRC
                if len(body) < length + 4:
                    break
                count += 1
    except (EOFError, OSError, zlib.error):
        pass  # a gzip stream cut short: what was readable is counted
    return count


def example_outputs(folder: Path) -> dict[str, int]:
    """Files, bytes and whole records under an ExampleGen's output folder, with the final
    files (Split-*/, renamed from Beam's temporary files once written) counted apart."""
    files = [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []
    records = {p: count_tfrecords(p) for p in files}
    final = [p for p in files if not any(part.startswith("beam-temp") for part in p.parts)]
    return {
        "files": len(files),
        "bytes": sum(p.stat().st_size for p in files),
        "records": sum(records.values()),
        "final_files": len(final),
        "final_records": sum(records[p] for p in final),
    }


def example_gen_stood(home: Path, run: Measurement, cap_bytes: int, cap_seconds: float) -> dict:
    """Where TFX's CsvExampleGen alone was when it ended or was stopped: time, memory, its
    MLMD state and what it had written."""
    metadata = reference.metadata_path(home)
    state = "no MLMD store yet"
    if metadata.exists():
        from ml_metadata import errors

        try:
            executions = run_executions(metadata)
        except errors.StatusError as err:  # a store the killed run left half-written
            state = f"MLMD store unreadable ({err})"
        else:
            state = executions.get(reference.EXAMPLE_GEN_ID, ("not started", 0.0))[0]
    outputs = example_outputs(reference.example_gen_dir(home) / "examples")
    return {
        "elapsed_seconds": run.wall_seconds,
        "stopped": run.stopped,
        "returncode": run.returncode,
        "cap_bytes": cap_bytes,
        "cap_seconds": cap_seconds,
        "cap_passed_at_seconds": run.limit_reached.seconds if run.limit_reached else None,
        "peak_tree_bytes": run.tree.total_bytes,
        "peak_largest_process_bytes": run.tree.largest_process_bytes,
        "mlmd_state": state,
        "error": _last_error_line(run) if run.stopped is None and run.returncode else None,
        **{f"output_{key}": value for key, value in outputs.items()},
    }


def _last_error_line(run: Measurement) -> str:
    """The last line of a failed run's stderr (its error), without its log prefix."""
    lines = [line.strip() for line in run.stderr_tail().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def run_reference_example_gen(
    rows: int, data: Path, workspace: Path, cap_bytes: int, cap_seconds: float
) -> ScaleRun:
    """TFX's example's CsvExampleGen alone on the rows, stopped at either cap."""
    example, home = _reference_home(f"reference-example-gen-{rows}", data, workspace)
    print(
        f"bench: TFX's CsvExampleGen alone on {rows:,} rows (stopped past"
        f" {cap_bytes / GIB:g} GiB or {cap_seconds:,.0f} s) ...",
        flush=True,
    )
    run = run_measured(
        f"reference-example-gen-{rows}", reference.example_gen_command(example), cwd=home,
        env=reference.example_gen_environment(home), log_dir=workspace / "logs",
        timeout_seconds=cap_seconds, memory_cap_bytes=cap_bytes,
    )  # fmt: skip
    # However it ended (a cap, the kernel's OOM killer, an error near the cap) is where it
    # stood: the section says how, with the error's last line, rather than losing the runs
    # before it.
    return ScaleRun(
        f"TFX example's CsvExampleGen alone, {rows:,} rows",
        rows,
        run,
        component_seconds(reference.metadata_path(home)) if run.returncode == 0 else {},
        kind=KIND_EXAMPLE_GEN,
        stood=example_gen_stood(home, run, cap_bytes, cap_seconds),
    )


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def training_label(run: ScaleRun) -> str:
    """What the run's Trainer ran, named as the run summary names it: epochs (passes over
    the train split), or at scale rounds of `training.validation_examples` examples, each
    followed by a validation."""
    t = run.training
    if not t:
        return f"{run.examples_trained:,} examples" if run.examples_trained else "-"
    if "steps" in t:  # TFX's example: TrainArgs(num_steps) of its batch
        return (
            f"{t['steps']:,} steps x {t['batch_size']} = {t['steps'] * t['batch_size']:,} examples"
        )
    # A round's examples are its steps' (steps_per_epoch is already cut to train_steps,
    # round_examples is the configured round's size).
    count, steps, batch = t["epochs_run"], t["steps_per_epoch"], t["batch_size"]
    if t.get("validation") == "examples":
        unit = "round" if count == 1 else "rounds"
        text = (
            f"{count} {unit} of {steps:,} steps x {batch} = {steps * batch:,} examples, each"
            f" followed by a validation (best: round {t.get('best_epoch')})"
        )
    else:
        unit = "epoch" if count == 1 else "epochs"
        text = f"{count} {unit} of {steps:,} steps x {batch} (best: epoch {t.get('best_epoch')})"
    return f"{text}, {t['examples_trained']:,} examples"


def _gib(value: int) -> str:
    return f"{value / GIB:.2f} GiB"


def _find(runs: list[ScaleRun], kind: str, rows: int | None = None) -> ScaleRun | None:
    """The run of that kind (at that size; else the largest), if any."""
    found = [r for r in runs if r.kind == kind and (rows is None or r.rows == rows)]
    return max(found, key=lambda r: r.rows) if found else None


def _target(
    name: str, value: float | None, detail: str, goal: str, met: bool, why: str = ""
) -> str:
    """One row of the targets table; "not measured" (and `why`) when `value` is None."""
    if value is None:
        absent = f"{NOT_MEASURED}: {why}" if why else NOT_MEASURED
        return f"| {name} | {absent} | {goal} | {NOT_MEASURED} |"
    return f"| {name} | {detail} | {goal} | {_yes_no(met)} |"


def _quotient(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def targets(
    runs: list[ScaleRun], trainer: trainer_input.TrainerInputRun | None, trainer_note: str
) -> list[str]:
    """The targets table: each target with its measured value and whether it is met."""
    ref = _find(runs, KIND_REFERENCE)
    at = ref.rows if ref else REFERENCE_MAX_ROWS
    ours_at = _find(runs, KIND_OURS, at)
    large = _find(runs, KIND_OURS, LARGE_ROWS)
    lines = ["| target | measured | goal | met |", "|---|---|---|---|"]
    ours_s, ref_s = (ours_at.wall_seconds if ours_at else None), (ref.wall_seconds if ref else None)
    whole = _quotient(ours_s, ref_s)
    lines.append(
        _target(
            f"ours / TFX example, whole pipeline wall time, {at:,} rows",
            whole,
            f"{whole:.2f} ({ours_s:,.0f} s / {ref_s:,.0f} s)" if whole is not None else "",
            f"<= {WHOLE_GOAL}",
            whole is not None and whole <= WHOLE_GOAL,
        )
    )
    for stage in STAGES:
        ours_s = ours_at.components.get(stage) if ours_at else None
        ref_s = ref.components.get(stage) if ref else None
        ratio = _quotient(ours_s, ref_s)
        lines.append(
            _target(
                f"ours / TFX example, {stage}, {at:,} rows",
                ratio,
                f"{ratio:.2f} ({ours_s:,.0f} s / {ref_s:,.0f} s)" if ratio is not None else "",
                f"<= {STAGE_GOAL}",
                ratio is not None and ratio <= STAGE_GOAL,
            )
        )
    rmse = _quotient(ours_at.eval_rmse, ours_at.oracle_rmse) if ours_at else None
    lines.append(
        _target(
            f"eval RMSE / oracle RMSE on the same test rows, {at:,} rows",
            rmse,
            f"{rmse:.3f} ({ours_at.eval_rmse:.3f} / {ours_at.oracle_rmse:.3f})"
            if ours_at and rmse is not None
            else "",
            f"<= {RMSE_GOAL}",
            rmse is not None and rmse <= RMSE_GOAL,
            "to be re-measured (no oracle on the run's test rows)"
            if ours_at and ours_at.eval_rmse
            else "",
        )
    )
    rss = large.run.max_rss_bytes / GIB if large else None
    lines.append(
        _target(
            f"peak RSS of our largest process, {LARGE_ROWS:,} rows",
            rss,
            f"{rss:.2f} GiB" if rss is not None else "",
            f"< {RSS_GOAL_GIB:g} GiB",
            rss is not None and rss < RSS_GOAL_GIB,
        )
    )
    large_s = large.wall_seconds if large else None
    growth = _quotient(large_s, ours_at.wall_seconds if ours_at else None)
    lines.append(
        _target(
            f"t({LARGE_ROWS:,}) / t({at:,}), ours",
            growth,
            f"{growth:.2f} ({large_s:,.0f} s / {ours_at.wall_seconds:,.0f} s)"
            if growth is not None and ours_at
            else "",
            f"<= {GROWTH_GOAL:g}",
            growth is not None and growth <= GROWTH_GOAL,
        )
    )
    ratio = trainer.ratio if trainer else None
    lines.append(
        _target(
            "Trainer input, examples/s vs `model.fit` on the same transformed batches in memory",
            ratio,
            f"{ratio:.2f}x ({trainer.streamed.examples_per_s:,.0f} vs"
            f" {trainer.in_memory.examples_per_s:,.0f} examples/s, {trainer.rows:,} rows)"
            if trainer and ratio is not None
            else "",
            f">= {TRAINER_INPUT_GOAL}x",
            ratio is not None and ratio >= TRAINER_INPUT_GOAL,
            trainer_note,
        )
    )
    return lines


def figure_path(rows: int) -> Path:
    """The memory curves of one size, relative to the report's folder."""
    return FIGURES_DIR / f"scale-memory-{rows}.svg"


def memory_figures(runs: list[ScaleRun]) -> dict[Path, str]:
    """The SVG of each size's memory curves (ours and TFX's, each run that kept its RSS
    series; the budget run, a re-run of three components, left out), by `figure_path`."""
    from bench import memory_svg

    figures = {}
    for rows in sorted({r.rows for r in runs}):
        drawn = [r for r in runs if r.rows == rows and r.kind != KIND_BUDGET and r.run.rss_series]
        if not drawn:
            continue
        caps = [r.stood["cap_bytes"] for r in drawn if r.stood and r.stood.get("cap_bytes")]
        figures[figure_path(rows)] = memory_svg.memory_chart(
            [memory_svg.Curve(r.name, r.run.rss_series) for r in drawn],
            f"Sampled RSS over time, {rows:,} rows",
            cap_bytes=max(caps) if caps else None,
        )
    return figures


def write_figures(report: Path, runs: list[ScaleRun]) -> list[Path]:
    """Writes `memory_figures` beside the report; returns the paths written."""
    written = []
    for relative, text in memory_figures(runs).items():
        path = report.parent / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def _stood_note(r: ScaleRun) -> str:
    """Where a capped CsvExampleGen-only run stood, in a sentence."""
    s = r.stood or {}
    caps = (
        f"caps {s.get('cap_bytes', 0) / GIB:g} GiB of the process tree or"
        f" {s.get('cap_seconds', 0):,.0f} s"
    )
    if s.get("stopped") == STOPPED_BY_MEMORY:
        how = f"stopped by the memory cap after {s['elapsed_seconds']:,.0f} s"
    elif s.get("stopped"):
        how = f"stopped by the time cap after {s['elapsed_seconds']:,.0f} s"
    elif s.get("returncode") == 0:
        how = f"finished within the caps in {s['elapsed_seconds']:,.0f} s"
    else:
        how = (
            f"ended with exit code {s.get('returncode')} after {s.get('elapsed_seconds', 0):,.0f} s"
            + (f" (`{s['error']}`)" if s.get("error") else "")
        )
    if s.get("output_files"):
        written = (
            f"{s['output_files']:,} output files, {s.get('output_bytes', 0) / 2**20:,.1f} MiB,"
            f" {s.get('output_records', 0):,} whole records written"
            f" ({s.get('output_final_files', 0):,} files final,"
            f" {s.get('output_final_records', 0):,} records in them)"
        )
    else:
        written = "no output written yet"
    state = s.get("mlmd_state") or "unknown"
    mlmd = f"its MLMD execution {state}" if state.isupper() else f"MLMD: {state}"
    return (
        f"{r.name} ({caps}): {how}; process tree at {_gib(s.get('peak_tree_bytes', 0))} at its"
        f" peak, largest process {_gib(s.get('peak_largest_process_bytes', 0))}; {mlmd};"
        f" {written}. The whole example is run up to {REFERENCE_MAX_ROWS:,} rows only."
    )


def _budget_note(r: ScaleRun) -> str:
    """How a budget run's wall time is made, and what MLMD says it ran."""
    b = r.budget or {}
    cached = b.get("cached", {})
    ran = [n for n, state in b.get("states", {}).items() if state != "CACHED"]
    extra = [n for n in ran if n not in BUDGET_RERUN and n not in ALWAYS_RUN]
    parts = ", ".join(f"{n} {r.components[n]:,.0f} s" for n in ran if n in r.components)
    steps, batch = b.get("steps", 0), b.get("batch_size", 0)
    ran_examples = (
        ""
        if r.examples_trained in (None, steps * batch)
        else f", the Trainer ran {r.examples_trained:,} in whole epochs or rounds"
    )
    text = (
        f"{r.name}: a second run on the same root with `training.train_steps={steps}`"
        f" ({steps} x {batch} = {steps * batch:,} examples{ran_examples}; the example trains"
        f" {b.get('reference_examples', 0):,}). MLMD: {len(cached)} components"
        f" cached, {len(ran)} ran ({parts}). Its wall time"
        f" {r.wall_seconds:,.0f} s is the cached components' seconds in the full run"
        f" ({sum(v for v in cached.values() if v is not None):,.0f} s) plus this run's"
        f" {r.run.wall_seconds:,.0f} s (start-up, cache look-ups and the components it ran);"
        " its peak RSS is this run's own."
    )
    if extra:
        text += f" Beyond {', '.join(BUDGET_RERUN)}, these re-ran too: {', '.join(extra)}."
    if b.get("baseline_evaluated"):
        text += (
            " Its Evaluator also scored the full run's blessed model as the baseline, work"
            " the full run's Evaluator did not have."
        )
    return text


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
        if r.run.stopped:
            cap = "time cap" if r.run.stopped == STOPPED_BY_TIMEOUT else r.run.stopped
            wall, rate = f"stopped at {r.wall_seconds:,.0f} s ({cap})", "-"
        else:
            wall, rate = f"{r.wall_seconds:,.0f} s", f"{r.rows / r.wall_seconds:,.0f}"
        if r.kind == KIND_BUDGET:
            wall += " (cached upstream + this run)"
        largest = _gib(r.run.max_rss_bytes) + (" (sampled)" if r.run.max_rss_sampled else "")
        lines.append(
            f"| {r.name} | {wall} | {rate} | {largest} | {_gib(r.run.tree.total_bytes)} |"
            f" {rmse} | {best} | {ratio} | {floor} |"
        )
    nodes: list[str] = []
    for r in runs:
        nodes += [n for n in r.components if n not in nodes]
    for r in runs:
        if r.kind == KIND_EXAMPLE_GEN and reference.EXAMPLE_GEN_ID not in nodes:
            nodes.insert(0, reference.EXAMPLE_GEN_ID)

    def cell(r: ScaleRun, node: str, per_million: bool = False) -> str:
        if r.kind == KIND_BUDGET and node in (r.budget or {}).get("cached", {}):
            return "cached"
        if node not in r.components:
            if r.kind == KIND_EXAMPLE_GEN and node == reference.EXAMPLE_GEN_ID:
                return f"stopped at {r.wall_seconds:,.0f} s" if r.run.stopped else "-"
            return "-"
        seconds = r.components[node]
        return f"{seconds / (r.rows / 1e6):,.1f}" if per_million else f"{seconds:,.0f}"

    lines += ["", "Wall seconds per component (MLMD execution start to end):", ""]
    lines.append("| component | " + " | ".join(r.name for r in runs) + " |")
    lines.append("|---" * (len(runs) + 1) + "|")
    for node in nodes:
        lines.append(f"| {node} | " + " | ".join(cell(r, node) for r in runs) + " |")
    if any(r.examples_trained for r in runs):
        cells = [f"{r.examples_trained:,}" if r.examples_trained else "-" for r in runs]
        lines.append("| examples trained (steps x batch) | " + " | ".join(cells) + " |")
    if any(r.training for r in runs):
        cells = [training_label(r) if r.training else "-" for r in runs]
        lines.append("| what the Trainer ran | " + " | ".join(cells) + " |")
    # Cost per million rows: the complete runs (a budget run re-runs three components; a
    # capped run did not finish).
    costed = [r for r in runs if r.kind in (KIND_OURS, KIND_REFERENCE) and not r.run.stopped]
    if costed:
        lines += ["", "Cost per million rows (wall seconds per 1M input rows):", ""]
        lines.append("| component | " + " | ".join(r.name for r in costed) + " |")
        lines.append("|---" * (len(costed) + 1) + "|")
        for node in nodes:
            if any(node in r.components for r in costed):
                cells = [cell(r, node, per_million=True) for r in costed]
                lines.append(f"| {node} | " + " | ".join(cells) + " |")
        cells = [f"{r.wall_seconds / (r.rows / 1e6):,.1f}" for r in costed]
        lines.append("| whole run | " + " | ".join(cells) + " |")
    lines += ["", *targets(runs, trainer, trainer_note)]
    figures = memory_figures(runs)
    lines += ["", "Memory over time (sampled every 0.5 s: the process tree solid, its largest"
              " process dashed):", ""]  # fmt: skip
    for rows in sorted({r.rows for r in runs}):
        path = figure_path(rows)
        if path in figures:
            lines.append(f"![Sampled RSS over time, {rows:,} rows]({path.as_posix()})")
            lines.append("")
        missing = [r.name for r in runs if r.rows == rows and r.kind != KIND_BUDGET
                   and not r.run.rss_series]  # fmt: skip
        if missing:
            lines += [f"{rows:,} rows: no RSS series kept for {', '.join(missing)} (measured"
                      " before the series were saved).", ""]  # fmt: skip
    all_notes = list(notes)
    all_notes += [_stood_note(r) for r in runs if r.kind == KIND_EXAMPLE_GEN]
    all_notes += [_budget_note(r) for r in runs if r.kind == KIND_BUDGET]
    lines += [f"- {n}" for n in all_notes] + [""] if all_notes else []
    lines += [
        "The oracle is E[fare | booking-time fields] by the generator's own draws"
        " (`taxifare data oracle`), scored on the test split the Evaluator measured the eval"
        " RMSE on, over the config's label range (+- its standard error: the fares' long tail"
        " makes any RMSE on a split that noisy, a model's and the oracle's alike, and on the"
        " same rows the two move together). The floor is `rmse_floor_label_range` of the span"
        " in the generator's `synth.json`, an expectation over the whole span: a split can be"
        " a few standard errors below it by luck. Peak RSS of the largest process is getrusage's"
        ' (bench/rss_wrapper.py; "sampled" where the run was stopped before it could report);'
        " of the tree, psutil samples every 0.5 s. At scale the Trainer validates after every"
        " round of `training.validation_examples` examples rather than after each pass (an"
        ' epoch): "what the Trainer ran" names them as the run summary does. The machine is'
        " shared: compare runs of one measurement only.",
        "",
    ]
    return lines


def write_section(path: Path, lines: list[str]) -> None:
    """Replaces (or appends) the scale section of the report file (under its current title
    or one it had before)."""
    text = path.read_text() if path.exists() else ""
    body = "\n".join(lines).rstrip("\n") + "\n"
    title = next((t for t in (SECTION_TITLE, *OLD_SECTION_TITLES) if t in text), None)
    if title is not None:
        head, rest = text.split(title, 1)
        after = rest.find("\n## ")
        tail = rest[after + 1 :] if after >= 0 else ""
        text = head + body + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text)


def _write(path: Path, runs: list[ScaleRun], lines: list[str]) -> None:
    """The section and its memory curves."""
    write_section(path, lines)
    write_figures(path, runs)


def main(args: argparse.Namespace) -> int:
    """Runs the scale benchmark; returns the exit code."""
    try:
        rows_list = parse_rows(args.scale_rows)
        cap_bytes, cap_seconds = caps(args)
    except ValueError as err:
        print(f"bench: error: {err}", file=sys.stderr)
        return 2
    full_reference_rows = max((r for r in rows_list if r <= REFERENCE_MAX_ROWS), default=None)
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
            timeout = timeout_for(rows, args.timeout)

            def ours_run(
                rows: int = rows, data: Path = data, floor: float = floor, timeout: float = timeout
            ) -> ScaleRun:
                run = run_ours(rows, data, workspace, args.config, timeout)
                run.floor = floor
                return run

            full = _saved_or_run(workspace / f"ours-{rows}.json", ours_run, notes)
            _backfill_training(full, workspace / f"ours-{rows}.json", workspace)
            runs.append(full)
            _write(args.output, runs, render_section(runs, synth_seconds, notes))
            if rows == full_reference_rows:
                budget = reference.find_reference().examples_trained
                runs.append(
                    _saved_or_run(
                        workspace / f"ours-{rows}-budget.json",
                        lambda full=full, data=data, timeout=timeout, budget=budget: run_budget(
                            full, data, workspace, args.config, timeout, budget
                        ),
                        notes,
                    )
                )
                _write(args.output, runs, render_section(runs, synth_seconds, notes))
                if not args.skip_reference:
                    runs.append(
                        _saved_or_run(
                            workspace / f"reference-{rows}.json",
                            lambda rows=rows, data=data, timeout=timeout: run_reference(
                                rows, data, workspace, timeout
                            ),
                            notes,
                        )
                    )
            elif rows > REFERENCE_MAX_ROWS and not args.skip_reference:
                runs.append(
                    _saved_or_run(
                        workspace / f"reference-example-gen-{rows}.json",
                        lambda rows=rows, data=data: run_reference_example_gen(
                            rows, data, workspace, cap_bytes, cap_seconds
                        ),
                        notes,
                    )
                )
            _write(args.output, runs, render_section(runs, synth_seconds, notes))
        # The Trainer's streamed input on the smallest span, after the runs, in this process,
        # once what the runs left behind has exited (it is a ratio of two CPU-bound timings).
        waited = machine.wait_until_idle()
        print(f"bench: waited {waited:.0f} s for an idle machine", flush=True)
        trips = sorted(str(p) for p in (workspace / f"synth-{min(rows_list)}").glob("span-*/*.csv"))
        trainer = trainer_input.run_on_trips(
            trips, workspace / "trainer-input", lambda line: print(f"bench: {line}", flush=True)
        )
        _write(args.output, runs, render_section(runs, synth_seconds, notes, trainer))
        print("\n".join(trainer_input.summary_lines(trainer)))
    except (RuntimeError, subprocess.CalledProcessError) as err:
        print(f"bench: error: {err}", file=sys.stderr)
        notes.append(f"incomplete: {str(err).splitlines()[0]}")
        _write(args.output, runs, render_section(runs, synth_seconds, notes))
        return 1
    finally:
        if not args.keep and args.scale_dir is None:
            shutil.rmtree(workspace, ignore_errors=True)
        else:
            print(f"bench: kept the scale runs in {workspace}", file=sys.stderr)
    print(f"bench: wrote the scale section of {args.output}")
    return 0
