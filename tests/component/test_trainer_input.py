"""The Trainer-input benchmark's measurement, and the Trainer's streamed batches, on real rows."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import tensorflow as tf

from bench import trainer_input
from taxifare_modules import features as f
from taxifare_modules import task, trainer

ROWS = 300
BATCH = 32


@pytest.fixture(scope="module")
def transformed(tmp_path_factory, sample_rows):
    """Real trips through the task's Transform: (train example patterns, transform dir)."""
    work = tmp_path_factory.mktemp("trainer-input")
    trips = work / "trips.csv"
    with open(trips, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(sample_rows[0]))
        writer.writeheader()
        writer.writerows(sample_rows[:ROWS])
    # What an earlier measurement in the same folder left (a rerun of --scale with the same
    # --scale-dir): it is replaced, not published over.
    stale = work / "out" / "task" / "transform" / "transform_fn"
    stale.mkdir(parents=True)
    (stale / "saved_model.pb").write_bytes(b"an earlier run's transform graph")
    return trainer_input.prepare([str(trips)], work / "out")


def _accessor():
    from tfx.components.trainer.fn_args_utils import DataAccessor

    return DataAccessor(
        tf_dataset_factory=task.tf_dataset_factory,
        record_batch_factory=None,
        data_view_decode_fn=None,
    )


@pytest.mark.slow
def test_both_sides_train_the_same_steps_and_examples(transformed):
    files, transform_dir = transformed
    run = trainer_input.measure(files, transform_dir, batch_size=BATCH, steps=4, epochs=2)
    # A few trips have implausible fares and are dropped by Transform's input filter.
    assert 0.9 * ROWS < run.rows <= ROWS
    assert run.files >= 1
    for side in (run.streamed, run.in_memory):
        assert (side.steps, side.batch_size, len(side.epoch_seconds)) == (4, BATCH, 2)
        assert side.examples == 4 * BATCH * 2
        assert all(s > 0 for s in side.epoch_seconds + side.cpu_seconds)
        assert len(side.cpu_seconds) == 2 and side.examples_per_cpu_s > 0
        assert side.examples_per_s > 0
    assert run.streamed.examples == run.in_memory.examples
    assert math.isfinite(run.ratio) and run.ratio > 0
    assert math.isfinite(run.cpu_ratio) and run.cpu_ratio > 0
    section = "\n".join(trainer_input.markdown_section(run))
    assert section.startswith(trainer_input.SECTION_TITLE)
    assert f"**{run.ratio:.2f}x**" in section
    row = trainer_input.scale_row(run)
    assert f"{run.ratio:.2f}x" in row and "not measured" not in row
    assert "not measured: skipped" in trainer_input.scale_row(None, "skipped")


@pytest.mark.slow
def test_streaming_gives_the_batches_tfxio_gives(transformed):
    """Parsing several batches at a time and cutting them up changes no batch."""
    import tensorflow_transform as tft
    from tfx_bsl.public import tfxio

    files, transform_dir = transformed
    output = tft.TFTransformOutput(transform_dir)
    rows = trainer.count_examples(files)

    def plain(num_epochs):
        return _accessor().tf_dataset_factory(
            files,
            tfxio.TensorFlowDatasetOptions(
                batch_size=BATCH,
                label_key=f.LABEL_KEY,
                shuffle=num_epochs is None,
                shuffle_seed=7,
                num_epochs=num_epochs,
            ),
            output.transformed_metadata.schema,
        )

    # Training: shuffled with the seed and repeated; more batches than one pass holds.
    streamed = trainer._input_fn(files, _accessor(), output, BATCH, 7, in_memory=False)
    count = rows // BATCH + 3
    for got, want in zip(streamed.take(count), plain(None).take(count), strict=True):
        np.testing.assert_array_equal(got[1].numpy(), want[1].numpy())
        assert set(got[0]) == set(want[0])
        for key in want[0]:
            np.testing.assert_array_equal(got[0][key].numpy(), want[0][key].numpy())
    assert streamed.element_spec[1].shape == tf.TensorShape([BATCH])

    # Evaluation: one pass in file order, the last batch short.
    once = list(trainer._input_fn(files, _accessor(), output, BATCH, 7, False, training=False))
    reference = list(plain(1))
    assert [len(b[1]) for b in once] == [len(b[1]) for b in reference]
    assert sum(len(b[1]) for b in once) == rows
    np.testing.assert_array_equal(
        np.concatenate([b[1].numpy() for b in once]),
        np.concatenate([b[1].numpy() for b in reference]),
    )


def _dataset_ops(dataset: tf.data.Dataset) -> set[str]:
    """The op names of a dataset's graph (its reading, shuffling, parsing, ...)."""
    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(dataset._as_serialized_graph().numpy())
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    return ops


@pytest.mark.slow
def test_the_trainer_reads_its_records_without_a_thread_hand_off_per_record(transformed):
    """A parallel interleave hands every record between threads, ~5x the CPU of reading,
    shuffling and parsing it on two cores: the Trainer's datasets and its example count
    read the files in the consuming thread, several files in turn."""
    import tensorflow_transform as tft

    files, transform_dir = transformed
    output = tft.TFTransformOutput(transform_dir)
    datasets = {
        "training": trainer._input_fn(files, _accessor(), output, BATCH, 7, in_memory=False),
        "validation": trainer._input_fn(files, _accessor(), output, BATCH, 7, False, False),
        "reference pass": trainer._eval_pass(files, _accessor(), output),
    }
    for name, dataset in datasets.items():
        ops = _dataset_ops(dataset)
        assert "InterleaveDataset" in ops, name
        assert not {op for op in ops if op.startswith("ParallelInterleave")}, name
    # The count reads a batch of records at a time, and counts what the files hold.
    assert trainer.count_examples(files) == sum(
        1 for name in tf.io.gfile.glob(files[0]) for _ in tf.data.TFRecordDataset(name, "GZIP")
    )
