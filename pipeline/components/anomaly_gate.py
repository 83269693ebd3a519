"""AnomalyGate: stops the run when ExampleValidator found anomalies.

TFX's ExampleValidator only records anomalies; nothing downstream stops on them. This
component fails when there are any, and Transform (and so everything after it) is made to
depend on it, so a run on bad data trains nothing and pushes nothing.
"""

from tfx.dsl.component.experimental.annotations import InputArtifact
from tfx.dsl.component.experimental.decorators import component
from tfx.types import artifact_utils, standard_artifacts

from pipeline.anomalies import format_anomalies, read_anomalies


class AnomaliesFoundError(RuntimeError):
    """The data has anomalies against the schema; the message lists them."""


@component
def AnomalyGate(  # noqa: N802 (a TFX component is named like a class)
    anomalies: InputArtifact[standard_artifacts.ExampleAnomalies],
) -> None:
    """Fails with the list of anomalies when ExampleValidator found any."""
    splits = artifact_utils.decode_split_names(anomalies.split_names)
    found = read_anomalies(anomalies.uri, splits)
    if found:
        raise AnomaliesFoundError(
            f"{len(found)} data anomalies against the schema; stopping before Transform:\n"
            + format_anomalies(found)
        )
