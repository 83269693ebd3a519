"""Reading ExampleValidator's anomalies and turning them into lines a person can read."""

from __future__ import annotations

import dataclasses
import os

from tensorflow_metadata.proto.v0 import anomalies_pb2

from pipeline import artifact_io

# The file ExampleValidator writes per split.
ANOMALIES_FILE = "SchemaDiff.pb"


class DataFaultError(ValueError):
    """The data is not what it claims to be (a malformed cell, too few trips left).

    A component raises a subclass, with a message naming the file or the split, to stop the
    run as bad data (`taxifare run` exits 3 with that message), whichever component found it.
    """


@dataclasses.dataclass(frozen=True)
class Anomaly:
    """One anomaly of one feature in one split."""

    split: str
    feature: str
    kind: str
    description: str

    def __str__(self) -> str:
        return f"[{self.split}] {self.feature}: {self.kind}: {self.description}"


def read_anomalies(uri: str, splits: list[str]) -> list[Anomaly]:
    """Reads the anomalies ExampleValidator wrote under artifact `uri` for `splits`."""
    found: list[Anomaly] = []
    for split in splits:
        path = os.path.join(uri, f"Split-{split}", ANOMALIES_FILE)
        if not artifact_io.exists(path):
            continue
        proto = anomalies_pb2.Anomalies.FromString(artifact_io.read_bytes(path))
        found.extend(anomalies_from_proto(proto, split))
    return found


def anomalies_from_proto(proto: anomalies_pb2.Anomalies, split: str) -> list[Anomaly]:
    """Flattens an Anomalies proto into one Anomaly per feature and reason."""
    found = []
    for feature, info in sorted(proto.anomaly_info.items()):
        reasons = list(info.reason) or [None]
        for reason in reasons:
            if reason is None:
                kind = anomalies_pb2.AnomalyInfo.Severity.Name(info.severity)
                found.append(Anomaly(split, feature, kind, info.description))
            else:
                kind = anomalies_pb2.AnomalyInfo.Type.Name(reason.type)
                found.append(Anomaly(split, feature, kind, reason.description or info.description))
    if proto.HasField("dataset_anomaly_info"):
        info = proto.dataset_anomaly_info
        for reason in info.reason:
            kind = anomalies_pb2.AnomalyInfo.Type.Name(reason.type)
            found.append(Anomaly(split, "(dataset)", kind, reason.description))
    return found


def format_anomalies(anomalies: list[Anomaly]) -> str:
    """A readable table: one line per anomaly (split, feature, anomaly, description)."""
    if not anomalies:
        return "no anomalies"
    width = max(len(a.feature) for a in anomalies)
    kind_width = max(len(a.kind) for a in anomalies)
    lines = [
        f"  {a.split:<6} {a.feature:<{width}}  {a.kind:<{kind_width}}  {a.description}"
        for a in anomalies
    ]
    return "\n".join(lines)
