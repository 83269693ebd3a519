"""A corpus of realistic upstream faults, applied to real trips (tests and benchmark).

Each fault is something a real client or upstream system gets wrong, applied to the JSON
instances a client sends (raw trip fields; an unknown optional field left out). A fault can
hit a fraction of the traffic: one faulty client among several healthy ones.

For each fault the corpus says which features the skew check must flag (`must`) and which
it may also flag because the fault really changes them, if only a little (`may`); anything
else flagged is a false alarm.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Callable
from typing import Any

from taxifare_modules import features as f

# Where a client's location library puts a trip it cannot locate: the city's
# conventional center (City Hall), not any community area's centroid.
DEFAULT_POINT = (41.8837, -87.6324)
NEW_COMPANY = "Lakeshore Rides LLC"
PAYMENT_CODES = {"Cash": "CSH", "Credit Card": "CRD", "No Charge": "NOC", "Unknown": "UNK"}

Instance = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Fault:
    """One upstream fault.

    Attributes:
      name: a short identifier.
      description: what goes wrong, in words.
      apply: (instance, random) -> the instance as the faulty client sends it.
      must: features a check must flag when the whole traffic has the fault.
      may: features it may flag as well (the fault changes them, if only a little).
      share: the share of a faulty client's requests that have the fault.
    """

    name: str
    description: str
    apply: Callable[[Instance, random.Random], Instance]
    must: tuple[str, ...]
    may: tuple[str, ...] = ()
    share: float = 1.0


def _swap_lat_lon(trip: Instance, rng: random.Random) -> Instance:
    del rng
    for lat, lon in (
        (f.PICKUP_LATITUDE_KEY, f.PICKUP_LONGITUDE_KEY),
        (f.DROPOFF_LATITUDE_KEY, f.DROPOFF_LONGITUDE_KEY),
    ):
        if lat in trip and lon in trip:
            trip[lat], trip[lon] = trip[lon], trip[lat]
    return trip


def _timestamp_ms(trip: Instance, rng: random.Random) -> Instance:
    del rng
    trip[f.TIMESTAMP_KEY] = int(trip[f.TIMESTAMP_KEY]) * 1000
    return trip


def _payment_codes(trip: Instance, rng: random.Random) -> Instance:
    del rng
    value = trip.get(f.PAYMENT_TYPE_KEY)
    if value is not None:
        trip[f.PAYMENT_TYPE_KEY] = PAYMENT_CODES.get(value, value[:3].upper())
    return trip


def _company_omitted(trip: Instance, rng: random.Random) -> Instance:
    del rng
    trip.pop(f.COMPANY_KEY, None)
    return trip


def _day_zero_based(trip: Instance, rng: random.Random) -> Instance:
    del rng
    trip[f.DAY_KEY] = int(trip[f.DAY_KEY]) - 1
    return trip


def _pickup_default_point(trip: Instance, rng: random.Random) -> Instance:
    del rng
    trip[f.PICKUP_LATITUDE_KEY], trip[f.PICKUP_LONGITUDE_KEY] = DEFAULT_POINT
    return trip


def _new_company(trip: Instance, rng: random.Random) -> Instance:
    del rng
    trip[f.COMPANY_KEY] = NEW_COMPANY
    return trip


def _dropoff_as_pickup(trip: Instance, rng: random.Random) -> Instance:
    del rng
    for pickup, dropoff in (
        (f.PICKUP_LATITUDE_KEY, f.DROPOFF_LATITUDE_KEY),
        (f.PICKUP_LONGITUDE_KEY, f.DROPOFF_LONGITUDE_KEY),
    ):
        if dropoff in trip:
            trip[pickup] = trip[dropoff]
        else:
            trip.pop(pickup, None)
    return trip


_COORDS = f.COORDINATE_KEYS
_DERIVED_DISTANCE = f.DISTANCE_XF
_PREDICTION = f.PREDICTION_KEY

FAULTS: tuple[Fault, ...] = (
    Fault(
        "lat_lon_swapped",
        "latitude and longitude swapped (pickup and dropoff)",
        _swap_lat_lon,
        must=_COORDS,
        may=(_DERIVED_DISTANCE, _PREDICTION),
    ),
    Fault(
        "timestamp_ms",
        "trip start timestamps sent in milliseconds instead of seconds",
        _timestamp_ms,
        must=(f.TIMESTAMP_KEY,),
        may=(_PREDICTION,),
    ),
    Fault(
        "payment_codes",
        'payment types sent as short codes ("CSH", "CRD") instead of names',
        _payment_codes,
        must=(f.PAYMENT_TYPE_KEY,),
        may=(_PREDICTION,),
    ),
    Fault(
        "company_omitted",
        "company left out by a client that stopped sending it (half of its requests)",
        _company_omitted,
        must=(f.COMPANY_KEY,),
        may=(_PREDICTION,),
        share=0.5,
    ),
    Fault(
        "day_zero_based",
        "trip_start_day sent 0-based (0 = Sunday) instead of 1-based",
        _day_zero_based,
        must=(f.DAY_KEY,),
        may=(_PREDICTION,),
    ),
    Fault(
        "pickup_default_point",
        "pickups stuck at one default point (30% of requests)",
        _pickup_default_point,
        must=(f.PICKUP_LATITUDE_KEY, f.PICKUP_LONGITUDE_KEY),
        may=(_DERIVED_DISTANCE, _PREDICTION),
        share=0.3,
    ),
    Fault(
        "new_company",
        "a new company taking 15% of the trips",
        _new_company,
        must=(f.COMPANY_KEY,),
        may=(_PREDICTION,),
        share=0.15,
    ),
    Fault(
        "dropoff_as_pickup",
        "the dropoff point sent as the pickup point too (every trip zero miles long)",
        _dropoff_as_pickup,
        must=(_DERIVED_DISTANCE,),
        may=(f.PICKUP_LATITUDE_KEY, f.PICKUP_LONGITUDE_KEY, _PREDICTION),
    ),
)

FAULTS_BY_NAME = {fault.name: fault for fault in FAULTS}


def apply_fault(
    instances: list[Instance], fault: Fault, fraction: float, seed: int = 0
) -> list[Instance]:
    """`instances` with `fault` applied by a faulty client sending `fraction` of the traffic.

    The faulty client's requests are a random `fraction` of all; of those, the fault's own
    `share` have it. The input is not changed.
    """
    rng = random.Random(seed)
    out = []
    for instance in instances:
        trip = dict(instance)
        if rng.random() < fraction and rng.random() < fault.share:
            trip = fault.apply(trip, rng)
        out.append(trip)
    return out


def flagged_correctly(fault: Fault, flagged: list[str]) -> bool:
    """True when `flagged` has every feature the fault must flag and nothing it may not."""
    return set(fault.must) <= set(flagged) <= set(fault.must) | set(fault.may)


def detected(fault: Fault, flagged: list[str]) -> bool:
    """True when a check saw the fault: some of its features flagged, nothing else."""
    allowed = set(fault.must) | set(fault.may)
    return bool(set(flagged) & set(fault.must)) and set(flagged) <= allowed


def instance_examples(instances: list[Instance]) -> list[bytes]:
    """JSON instances (raw fields, unknown ones left out) as a client's serialized tf.Examples."""
    import tensorflow as tf

    out = []
    for instance in instances:
        feature = {}
        for key, value in instance.items():
            if key in f.FLOAT_FEATURE_KEYS:
                feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[value]))
            elif key in f.INT_FEATURE_KEYS:
                feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))
            else:
                feature[key] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[str(value).encode()])
                )
        example = tf.train.Example(features=tf.train.Features(feature=feature))
        out.append(example.SerializeToString())
    return out


@functools.lru_cache(maxsize=1)
def _column_types() -> dict[str, str]:
    """Column -> "INT" / "FLOAT" / "BYTES", as the curated schema types the sample's columns."""
    from tensorflow_metadata.proto.v0 import schema_pb2

    from pipeline.curated_schema import read_shipped_schema

    schema = read_shipped_schema()
    return {feature.name: schema_pb2.FeatureType.Name(feature.type) for feature in schema.feature}


def full_row_example(row: dict[str, str], types: dict[str, str] | None = None) -> bytes:
    """Every column of a CSV row (label and post-trip fields too) as a serialized tf.Example,
    each column typed as CsvExampleGen types it over the whole file (the curated schema's
    types): how TFX's examples build the tf.Examples they send. Empty cells are left out."""
    import tensorflow as tf

    types = types if types is not None else dict(_column_types())
    feature = {}
    for key, text in row.items():
        if text == "":
            continue
        kind = types.get(key, "BYTES")
        if kind == "INT":
            feature[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=[int(text)]))
        elif kind == "FLOAT":
            feature[key] = tf.train.Feature(float_list=tf.train.FloatList(value=[float(text)]))
        else:
            feature[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def served_fares(model_dir: str, instances: list[Instance]) -> list[float]:
    """What an exported model answers for `instances` (its `serving_tf_example` signature,
    called in process): the fares a server would log for this traffic."""
    import tensorflow as tf

    model = tf.saved_model.load(model_dir)
    fares = model.signatures[f.SERVING_TF_EXAMPLE_SIGNATURE](
        **{f.SERVING_TF_EXAMPLE_INPUT_KEY: tf.constant(instance_examples(instances))}
    )[f.PREDICTION_KEY]
    return [float(x) for x in fares.numpy().reshape(-1)]
