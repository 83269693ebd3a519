"""``python -m bench --trainer-input``: the Trainer's streamed input against batches in memory.

A split too large for memory is streamed by the Trainer from its files
(``taxifare_modules.trainer._input_fn(..., in_memory=False)``: TFXIO through the
DataAccessor, reading, shuffling and parsing while the model trains). This measures what
that costs: ``model.fit`` of the project's model (``build_model``, default ``ModelParams``)
for the same steps and batch size,

1. streamed: on ``_input_fn``'s streaming dataset, built with a DataAccessor as
   ``python -m taxifare_modules.task`` builds it;
2. in memory: on the same transformed batches, taken from the same streaming dataset into
   tensors before the clock starts, so no file is read and nothing parsed while it trains.

The two sides take turns, one ``model.fit`` epoch of ``steps`` steps at a time, each on
its own model, so that other work on the machine weighs on both alike; the first epoch of
each (tracing, the first fill of the shuffle buffer) is a warm-up, then
:data:`TIMED_EPOCHS` are timed. Each streamed epoch starts its files afresh, as every
``fit`` call does (the Trainer's single ``fit`` does that once): a slight handicap for
streaming. A side's examples/s is that of its median timed epoch. The target is
streamed / in memory >= :data:`TARGET_RATIO`.

The transformed examples come from ``taxifare_modules.task``'s Transform (the pipeline's
``preprocessing_fn`` with tf.Transform on Beam) over trips from ``taxifare data synth``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_ROWS = 200_000
TIMED_EPOCHS = 3
# The goal: the streamed input at 0.9x of the in-memory fit or better.
TARGET_RATIO = 0.9
SECTION_TITLE = "## Trainer input (streamed vs in memory)"
# Rows of the eval CSV Transform also needs; the measurement does not read them.
_EVAL_ROWS = 2_000


@dataclass(frozen=True)
class FitTiming:
    """One side's timed ``fit`` epochs (the warm-up epoch left out)."""

    epoch_seconds: tuple[float, ...]
    # CPU seconds of this process (all its threads) in each of those epochs: less moved by
    # other work on the machine than the wall time, and what the input pipeline adds.
    cpu_seconds: tuple[float, ...]
    steps: int
    batch_size: int
    load_before: float  # 1-minute load average when its first timed epoch started
    load_after: float  # and when the measurement ended

    @property
    def examples(self) -> int:
        """Examples trained on in the timed epochs."""
        return self.steps * self.batch_size * len(self.epoch_seconds)

    @property
    def examples_per_s(self) -> float:
        """Examples per second of the median timed epoch."""
        return self.steps * self.batch_size / statistics.median(self.epoch_seconds)

    @property
    def examples_per_cpu_s(self) -> float:
        """Examples per CPU second of the process, median timed epoch."""
        return self.steps * self.batch_size / statistics.median(self.cpu_seconds)


@dataclass(frozen=True)
class TrainerInputRun:
    """The two sides of the measurement, on `rows` transformed train examples."""

    rows: int
    files: int
    streamed: FitTiming
    in_memory: FitTiming

    @property
    def ratio(self) -> float:
        """Streamed examples/s over in-memory examples/s."""
        return self.streamed.examples_per_s / self.in_memory.examples_per_s

    @property
    def cpu_ratio(self) -> float:
        """Streamed examples per CPU second over in-memory examples per CPU second."""
        return self.streamed.examples_per_cpu_s / self.in_memory.examples_per_cpu_s


def task_outputs(output_dir: str) -> tuple[list[str], str]:
    """The train example files and the Transform output dir `taxifare_modules.task` wrote."""
    from taxifare_modules import task

    pattern = os.path.join(output_dir, task.TRANSFORMED_DIR, "Split-train", "*")
    return [pattern], os.path.join(output_dir, task.TRANSFORM_DIR)


def _fresh_model(seed: int) -> Any:
    """The default model, built and initialised the same way for each side."""
    import tensorflow as tf

    from taxifare_modules.model import ModelParams, build_model

    tf.keras.utils.set_random_seed(seed)
    return build_model(ModelParams())


def _fit_seconds(model: Any, dataset: Any, steps: int) -> tuple[float, float]:
    """Wall and process CPU seconds of one ``model.fit`` epoch of `steps` steps.

    Timed from the start of training (before the dataset's iterator is made: opening the
    files and filling the shuffle buffer count) to the end of its last step. What ``fit``
    does after that is left out: tearing its iterator down took 1-2 s at random on either
    side (an idle machine, 3 s epochs), once per ``fit`` call, which the Trainer's one
    ``fit`` pays once and this measurement would otherwise pay every epoch.
    """
    import tensorflow as tf

    marks: dict[str, tuple[float, float]] = {}

    class _Clock(tf.keras.callbacks.Callback):
        def on_train_begin(self, logs: Any = None) -> None:
            marks["begin"] = (time.perf_counter(), time.process_time())

        def on_train_end(self, logs: Any = None) -> None:
            marks["end"] = (time.perf_counter(), time.process_time())

    model.fit(dataset, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[_Clock()])
    (start, cpu), (end, cpu_end) = marks["begin"], marks["end"]
    return end - start, cpu_end - cpu


def _in_memory(batches: list[Any]) -> Any:
    """A repeating dataset of the given (features, label) batches, held as tensors."""
    import tensorflow as tf

    features = {k: tf.stack([b[0][k] for b in batches]) for k in batches[0][0]}
    labels = tf.stack([b[1] for b in batches])
    return (
        tf.data.Dataset.from_tensor_slices((features, labels))
        .cache()
        .repeat()
        .prefetch(tf.data.AUTOTUNE)
    )


def measure(
    train_files: list[str],
    transform_dir: str,
    batch_size: int | None = None,
    steps: int | None = None,
    epochs: int = TIMED_EPOCHS,
    seed: int | None = None,
) -> TrainerInputRun:
    """Times ``model.fit`` on the Trainer's streamed input and on the same batches in memory.

    Args:
      train_files: File patterns of the transformed train examples (gzipped TFRecords).
      transform_dir: The Transform output those examples were transformed with.
      batch_size: Examples per step (default: the pipeline's `training.batch_size`).
      steps: Steps per epoch (default: one pass over the files, as the Trainer's epochs).
      epochs: Timed epochs of each side, after one warm-up epoch.
      seed: The training seed (default: the pipeline's `training.seed`).
    """
    import tensorflow as tf
    import tensorflow_transform as tft
    from tfx.components.trainer.fn_args_utils import DataAccessor

    from taxifare_modules import task, trainer

    defaults = trainer.TrainingSettings()
    batch_size = batch_size or defaults.batch_size
    seed = defaults.seed if seed is None else seed
    rows = trainer.count_examples(train_files)
    files = len({name for pattern in train_files for name in tf.io.gfile.glob(pattern)})
    steps = steps or max(1, rows // batch_size)
    accessor = DataAccessor(
        tf_dataset_factory=task.tf_dataset_factory,
        record_batch_factory=None,
        data_view_decode_fn=None,
    )
    output = tft.TFTransformOutput(transform_dir)

    def streamed() -> tf.data.Dataset:
        return trainer._input_fn(train_files, accessor, output, batch_size, seed, in_memory=False)

    # The same batches the streamed side trains on, read and parsed before any clock.
    held = _in_memory(list(streamed().take(steps)))
    sides = {"streamed": (_fresh_model(seed), streamed()), "in_memory": (_fresh_model(seed), held)}
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    loads: dict[str, list[float]] = {name: [] for name in sides}
    # Alternating epochs, so that the machine's other work weighs on both sides alike; the
    # first of each (tracing, the first shuffle buffer) is not timed.
    for epoch in range(1 + epochs):
        for name, (model, dataset) in sides.items():
            load = os.getloadavg()[0]
            spent, used = _fit_seconds(model, dataset, steps)
            if epoch:
                seconds[name].append(spent)
                cpu[name].append(used)
                loads[name].append(load)
    load_end = os.getloadavg()[0]

    def timing(name: str) -> FitTiming:
        return FitTiming(
            tuple(seconds[name]), tuple(cpu[name]), steps, batch_size, loads[name][0], load_end
        )

    on_files, in_memory = timing("streamed"), timing("in_memory")
    return TrainerInputRun(rows=rows, files=files, streamed=on_files, in_memory=in_memory)


def prepare(trip_csvs: list[str], workspace: Path) -> tuple[list[str], str]:
    """Transforms trip CSVs as ``python -m taxifare_modules.task`` does; returns its outputs.

    Transform also needs an eval split: the first rows of the first CSV stand in for it.
    """
    from taxifare_modules import task

    workspace.mkdir(parents=True, exist_ok=True)
    eval_csv = workspace / "eval.csv"
    with open(trip_csvs[0]) as source, open(eval_csv, "w") as sink:
        for _, line in zip(range(_EVAL_ROWS + 1), source, strict=False):
            sink.write(line)
    out = workspace / "task"
    # A previous measurement's outputs (a rerun with the same --scale-dir): tf.Transform
    # refuses to publish over its own temporary folder.
    shutil.rmtree(out, ignore_errors=True)
    task.transform_csvs(
        trip_csvs, [str(eval_csv)], str(out), task.DEFAULT_MIN_FARE, task.DEFAULT_MAX_FARE
    )
    return task_outputs(str(out))


def run_on_trips(trip_csvs: list[str], workspace: Path, progress: Any = print) -> TrainerInputRun:
    """Transforms the trips (its time is printed, apart from the figures) and measures."""
    from pipeline.env import configure_environment

    configure_environment(verbose=False)
    start = time.monotonic()
    progress(f"transforming {len(trip_csvs)} trip file(s) with the task's Transform ...")
    train_files, transform_dir = prepare(trip_csvs, workspace)
    progress(f"transformed in {time.monotonic() - start:.0f} s; timing model.fit both ways ...")
    return measure(train_files, transform_dir)


def scale_row(run: TrainerInputRun | None, note: str = "") -> str:
    """The Trainer-input row of the Scale section's targets table."""
    name = "Trainer input, examples/s vs `model.fit` on the same transformed batches in memory"
    if run is None:
        return f"| {name} | not measured: {note or 'skipped'} | >= {TARGET_RATIO}x | - |"
    met = "yes" if run.ratio >= TARGET_RATIO else "no"
    return (
        f"| {name} | {run.ratio:.2f}x ({run.streamed.examples_per_s:,.0f} vs"
        f" {run.in_memory.examples_per_s:,.0f} examples/s, {run.rows:,} rows, load"
        f" {run.streamed.load_before:.1f}) | >= {TARGET_RATIO}x | {met} |"
    )


def _epochs(timing: FitTiming) -> str:
    return ", ".join(f"{s:.1f} s" for s in timing.epoch_seconds)


def markdown_section(run: TrainerInputRun | None, note: str = "") -> list[str]:
    """The "Trainer input" section of BENCHMARKS.md."""
    lines = [SECTION_TITLE, ""]
    if run is None:
        return [*lines, f"Not measured: {note or 'skipped'}."]
    s, m = run.streamed, run.in_memory
    met = "met" if run.ratio >= TARGET_RATIO else "not met"
    lines += [
        f"`model.fit` of the default model on {run.rows:,} transformed train examples"
        f" ({run.files} gzipped TFRecord file(s)), {s.steps:,} steps of {s.batch_size} per"
        f" epoch; the two sides took turns, one `fit` epoch at a time, after one warm-up"
        f" epoch each, then {len(s.epoch_seconds)} timed epochs each.",
        "",
        "| Input | Examples/s (median epoch) | Timed epochs | Examples per CPU second"
        " | Examples timed | Load average |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| Streamed: the Trainer's `_input_fn(..., in_memory=False)` | "
        f"{s.examples_per_s:,.0f} | {_epochs(s)} | {s.examples_per_cpu_s:,.0f} |"
        f" {s.examples:,} | {s.load_before:.1f} to {s.load_after:.1f} |",
        f"| The same batches, in memory | {m.examples_per_s:,.0f} | {_epochs(m)} |"
        f" {m.examples_per_cpu_s:,.0f} | {m.examples:,} | {m.load_before:.1f} to"
        f" {m.load_after:.1f} |",
        f"| **Ratio**, streamed / in memory | **{run.ratio:.2f}x** | target >="
        f" {TARGET_RATIO}x: **{met}** | {run.cpu_ratio:.2f}x | | |",
        "",
        "How measured: trips from `taxifare data synth` are transformed once by"
        " `taxifare_modules.task`'s Transform (the pipeline's `preprocessing_fn`); the"
        " streamed side reads them through a TFX `DataAccessor` as the Trainer does for a"
        " split larger than `training.in_memory_max_rows`. The in-memory side trains on the"
        " first batches of that same dataset (one epoch's worth, the very batches each streamed"
        " epoch sees), taken into tensors beforehand (`Dataset.from_tensor_slices`, cached),"
        " so it does no reading or parsing while it trains. Each side has its own model,"
        " built with the same seed. Every `fit` call restarts the stream (files, shuffle"
        " buffer), which the Trainer's one `fit` does once. The machine is shared: the load"
        " average (1 minute, at the first timed epoch and at the end) says how"
        " busy it was; on a busy machine the wall times track each side's CPU need, so"
        " examples per CPU second of this process (all its threads: training and input"
        " pipeline) is given too.",
    ]
    return lines


def summary_lines(run: TrainerInputRun | None, note: str = "") -> list[str]:
    """Terminal lines."""
    if run is None:
        return [f"trainer input: not measured, {note or 'skipped'}"]
    return [
        f"trainer input: streamed {run.streamed.examples_per_s:,.0f} examples/s, in memory"
        f" {run.in_memory.examples_per_s:,.0f} examples/s, ratio {run.ratio:.2f}x"
        f" (target >= {TARGET_RATIO}x; per CPU second {run.cpu_ratio:.2f}x) on {run.rows:,}"
        f" rows, {run.streamed.steps} steps of {run.streamed.batch_size};"
        f" load {run.streamed.load_before:.1f}"
    ]


def synthesize_trips(rows: int, workspace: Path) -> list[str]:
    """Writes `rows` synthetic trips as ``--scale`` does; returns the CSV files."""
    from bench import scale

    data = workspace / f"synth-{rows}"
    if not (data / "synth.json").exists():
        scale.synthesize(rows, data)
    return sorted(str(p) for p in data.glob("span-*/*.csv"))


def main(args: argparse.Namespace, workspace: Path) -> TrainerInputRun:
    """``--trainer-input``: synthesize, transform, measure; returns the run."""
    rows = args.trainer_input_rows or DEFAULT_ROWS
    trips = synthesize_trips(rows, workspace)
    return run_on_trips(
        trips, workspace / "trainer-input", lambda line: print(f"bench: {line}", flush=True)
    )
