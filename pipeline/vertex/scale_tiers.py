"""Scale tiers of the Trainer on Vertex AI Training, as Vertex `worker_pool_specs`.

A tier is a name users know for a cluster shape; each maps to machine types and accelerators
that Vertex AI Training offers today:

- `basic`: one CPU VM.
- `basic-gpu`: one VM with one GPU.
- `multi-gpu`: one VM with several GPUs (MirroredStrategy).
- `multi-worker`: a chief plus workers, GPUs optional (MultiWorkerMirroredStrategy).
- `custom`: worker pools written out in the config.

This module imports nothing heavy: the config validates tiers with it at load time.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

BASIC = "basic"
BASIC_GPU = "basic-gpu"
MULTI_GPU = "multi-gpu"
MULTI_WORKER = "multi-worker"
CUSTOM = "custom"
TIERS = (BASIC, BASIC_GPU, MULTI_GPU, MULTI_WORKER, CUSTOM)

# GPUs Vertex AI Training offers, with the machine family each attaches to. K80s are gone.
ACCELERATOR_MACHINE_FAMILIES: dict[str, tuple[str, ...]] = {
    "NVIDIA_TESLA_T4": ("n1-",),
    "NVIDIA_TESLA_V100": ("n1-",),
    "NVIDIA_TESLA_P100": ("n1-",),
    "NVIDIA_TESLA_P4": ("n1-",),
    "NVIDIA_L4": ("g2-",),
    "NVIDIA_TESLA_A100": ("a2-highgpu-", "a2-megagpu-"),
    "NVIDIA_A100_80GB": ("a2-ultragpu-",),
    "NVIDIA_H100_80GB": ("a3-highgpu-",),
}
# Machine families that always come with GPUs: they need an accelerator in the spec.
_GPU_ONLY_FAMILIES = ("g2-", "a2-", "a3-")

# Keys of a worker pool (snake_case: TFX hands the dict to the Vertex client as is).
_POOL_KEYS = {"machine_spec", "replica_count", "container_spec", "disk_spec"}
_MACHINE_SPEC_KEYS = {"machine_type", "accelerator_type", "accelerator_count"}
_CONTAINER_SPEC_KEYS = {"image_uri", "env"}


@dataclasses.dataclass(frozen=True)
class TierShape:
    """The machines of a tier: one VM type for the chief and every worker."""

    machine_type: str
    accelerator_type: str | None
    accelerator_count: int  # per VM; 0 without GPUs
    workers: int  # VMs besides the chief; 0 for a single VM


# Defaults per tier; `vertex.training` fields override single values.
DEFAULT_SHAPES: dict[str, TierShape] = {
    BASIC: TierShape("n1-standard-4", None, 0, 0),
    BASIC_GPU: TierShape("n1-standard-8", "NVIDIA_TESLA_T4", 1, 0),
    MULTI_GPU: TierShape("n1-standard-16", "NVIDIA_TESLA_T4", 4, 0),
    MULTI_WORKER: TierShape("n1-standard-8", None, 0, 2),
}


def check_machine(machine_type: str, accelerator_type: str | None, where: str) -> None:
    """Raises ValueError when the accelerator cannot attach to the machine type."""
    if accelerator_type is None:
        if machine_type.startswith(_GPU_ONLY_FAMILIES):
            raise ValueError(
                f"{where}machine_type {machine_type!r} comes with GPUs: name its"
                " accelerator_type (or choose a GPU tier)"
            )
        return
    families = ACCELERATOR_MACHINE_FAMILIES.get(accelerator_type)
    if families is None:
        raise ValueError(
            f"{where}accelerator_type {accelerator_type!r} is not offered by Vertex AI"
            f" Training; expected one of {sorted(ACCELERATOR_MACHINE_FAMILIES)}"
        )
    if not machine_type.startswith(families):
        raise ValueError(
            f"{where}accelerator_type {accelerator_type} attaches to"
            f" {'/'.join(f + '*' for f in families)} machine types, not machine_type"
            f" {machine_type!r}: set machine_type too"
        )


def resolve_shape(
    tier: str,
    machine_type: str | None,
    accelerator_type: str | None,
    accelerator_count: int | None,
    workers: int | None,
) -> TierShape:
    """The machines of a (non-custom) tier with the config's overrides applied.

    Raises:
      ValueError: an override the tier cannot have (GPUs on `basic`, two GPUs on
        `basic-gpu`, workers on a single-VM tier) or a GPU the machine cannot take.
    """
    if tier not in DEFAULT_SHAPES:
        raise ValueError(f"tier {tier!r} has no default machines")
    shape = DEFAULT_SHAPES[tier]
    if workers is not None and tier != MULTI_WORKER:
        raise ValueError(f"workers: only the {MULTI_WORKER} tier has workers (tier is {tier})")
    if tier == BASIC and (accelerator_type or accelerator_count):
        raise ValueError(f"tier {BASIC} is one CPU VM: use {BASIC_GPU} or {MULTI_GPU} for GPUs")
    if tier == BASIC_GPU and accelerator_count not in (None, 1):
        raise ValueError(
            f"accelerator_count: tier {BASIC_GPU} has one GPU (got {accelerator_count});"
            f" use {MULTI_GPU} for more"
        )
    if tier == MULTI_GPU and accelerator_count is not None and accelerator_count < 2:
        raise ValueError(
            f"accelerator_count: tier {MULTI_GPU} has several GPUs (got {accelerator_count});"
            f" use {BASIC_GPU} for one"
        )
    if tier == MULTI_WORKER and accelerator_count and not accelerator_type:
        raise ValueError("accelerator_count needs accelerator_type (which GPU)")
    gpu = accelerator_type or shape.accelerator_type
    if gpu is None:
        count = 0
    else:
        count = accelerator_count or shape.accelerator_count or 1
    resolved = TierShape(
        machine_type=machine_type or shape.machine_type,
        accelerator_type=gpu,
        accelerator_count=count,
        workers=shape.workers if workers is None else workers,
    )
    check_machine(resolved.machine_type, resolved.accelerator_type, "")
    return resolved


def _check_keys(value: Any, allowed: set[str], where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping, not {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ValueError(
            f"{where}: unknown key(s) {unknown}; expected some of {sorted(allowed)}"
            " (snake_case, as in the Vertex API's Python client)"
        )
    return value


def check_custom_pools(pools: Sequence[Any]) -> None:
    """Raises ValueError unless `pools` are Vertex worker pools the Trainer can run."""
    if not pools:
        raise ValueError(f"worker_pool_specs: tier {CUSTOM} needs at least one worker pool")
    for i, pool in enumerate(pools):
        where = f"worker_pool_specs[{i}]"
        pool = _check_keys(pool, _POOL_KEYS, where)
        spec = _check_keys(pool.get("machine_spec"), _MACHINE_SPEC_KEYS, f"{where}.machine_spec")
        machine_type = spec.get("machine_type")
        if not isinstance(machine_type, str) or not machine_type:
            raise ValueError(f"{where}.machine_spec.machine_type is required")
        check_machine(machine_type, spec.get("accelerator_type"), f"{where}.machine_spec: ")
        count = spec.get("accelerator_count")
        if spec.get("accelerator_type") and not (isinstance(count, int) and count >= 1):
            raise ValueError(f"{where}.machine_spec.accelerator_count must be a positive integer")
        replicas = pool.get("replica_count", 1)
        if not isinstance(replicas, int) or replicas < 1:
            raise ValueError(f"{where}.replica_count must be a positive integer")
        if i == 0 and replicas != 1:
            raise ValueError(f"{where}.replica_count: the first pool is the chief: exactly 1")
        if "container_spec" in pool:
            _check_keys(pool["container_spec"], _CONTAINER_SPEC_KEYS, f"{where}.container_spec")


def _pool(shape: TierShape, replicas: int, image: str) -> dict[str, Any]:
    machine: dict[str, Any] = {"machine_type": shape.machine_type}
    if shape.accelerator_type:
        machine["accelerator_type"] = shape.accelerator_type
        machine["accelerator_count"] = shape.accelerator_count
    return {
        "machine_spec": machine,
        "replica_count": replicas,
        "container_spec": {"image_uri": image},
    }


def worker_pool_specs(
    tier: str,
    image: str,
    shape: TierShape | None = None,
    custom_pools: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The Vertex `worker_pool_specs` of a tier, every pool running the pipeline image.

    Args:
      tier: one of TIERS.
      image: the pipeline image (TFX replaces its command with the Trainer's executor).
      shape: the resolved machines of a non-custom tier (see resolve_shape).
      custom_pools: the pools of the `custom` tier; a pool without a container_spec image
        gets `image`.

    Returns:
      Pool 0 is the chief; pool 1, when present, the workers (Vertex's convention, which is
      how Vertex fills TF_CONFIG and CLUSTER_SPEC on each replica).
    """
    if tier == CUSTOM:
        pools = [copy.deepcopy(dict(p)) for p in custom_pools]
        for pool in pools:
            container = dict(pool.get("container_spec") or {})
            container.setdefault("image_uri", image)
            pool["container_spec"] = container
            pool.setdefault("replica_count", 1)
        return pools
    if shape is None:
        raise ValueError(f"tier {tier!r} needs its resolved machine shape")
    pools = [_pool(shape, 1, image)]
    if shape.workers:
        pools.append(_pool(shape, shape.workers, image))
    return pools


def replica_total(pools: Sequence[Mapping[str, Any]]) -> int:
    """How many VMs the pools start."""
    return sum(int(p.get("replica_count", 1)) for p in pools)
