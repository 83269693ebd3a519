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
import re
from collections.abc import Mapping, Sequence
from typing import Any

BASIC = "basic"
BASIC_GPU = "basic-gpu"
MULTI_GPU = "multi-gpu"
MULTI_WORKER = "multi-worker"
CUSTOM = "custom"
TIERS = (BASIC, BASIC_GPU, MULTI_GPU, MULTI_WORKER, CUSTOM)

# GPUs Vertex AI Training offers on N1 machines, each with the vCPU limit per GPU count
# (Compute Engine attaches 1, 2, 4 or 8 of them to an N1 VM of at most that many vCPUs).
# K80s are gone.
N1_GPU_LIMITS: dict[str, dict[int, int]] = {
    "NVIDIA_TESLA_T4": {1: 48, 2: 48, 4: 96},
    "NVIDIA_TESLA_V100": {1: 12, 2: 24, 4: 48, 8: 96},
    "NVIDIA_TESLA_P100": {1: 16, 2: 32, 4: 64},
    "NVIDIA_TESLA_P4": {1: 24, 2: 48, 4: 96},
}
# Machine types that come with their GPUs: the accelerator and its count are fixed by the
# machine type (G2: L4; A2: A100 40 GB / 80 GB; A3: H100 / H200; A4: B200).
FIXED_GPU_MACHINES: dict[str, tuple[str, int]] = {
    **{
        f"g2-standard-{cpus}": ("NVIDIA_L4", gpus)
        for cpus, gpus in ((4, 1), (8, 1), (12, 1), (16, 1), (24, 2), (32, 1), (48, 4), (96, 8))
    },
    **{f"a2-highgpu-{n}g": ("NVIDIA_TESLA_A100", n) for n in (1, 2, 4, 8)},
    "a2-megagpu-16g": ("NVIDIA_TESLA_A100", 16),
    **{f"a2-ultragpu-{n}g": ("NVIDIA_A100_80GB", n) for n in (1, 2, 4, 8)},
    **{f"a3-highgpu-{n}g": ("NVIDIA_H100_80GB", n) for n in (1, 2, 4, 8)},
    "a3-megagpu-8g": ("NVIDIA_H100_MEGA_80GB", 8),
    "a3-ultragpu-8g": ("NVIDIA_H200_141GB", 8),
    "a4-highgpu-8g": ("NVIDIA_B200", 8),
}
# Every GPU type, with the machine types it attaches to (for the messages).
ACCELERATOR_MACHINE_FAMILIES: dict[str, tuple[str, ...]] = {
    **{gpu: ("n1-",) for gpu in N1_GPU_LIMITS},
    **{
        gpu: tuple(sorted(m for m, (g, _) in FIXED_GPU_MACHINES.items() if g == gpu))
        for gpu, _ in FIXED_GPU_MACHINES.values()
    },
}
# Machine families that always come with GPUs: they need an accelerator in the spec.
_GPU_ONLY_FAMILIES = ("g2-", "a2-", "a3-", "a4-")
# N1 shapes: n1-standard-8, n1-highmem-16, ... (the number is the vCPU count).
_N1_PATTERN = re.compile(r"^n1-(standard|highmem|highcpu)-(\d+)$")


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


def fixed_gpus(machine_type: str) -> tuple[str, int] | None:
    """(accelerator type, count) a machine type comes with, or None for an N1/CPU machine."""
    return FIXED_GPU_MACHINES.get(machine_type)


def check_machine(
    machine_type: str, accelerator_type: str | None, where: str, accelerator_count: int = 0
) -> None:
    """Raises ValueError unless the machine type can have that GPU type (and count).

    Args:
      machine_type: a Compute Engine machine type.
      accelerator_type: the GPU type, or None for a CPU machine.
      where: the message's prefix naming the place in the config.
      accelerator_count: GPUs per VM; 0 checks the type alone.
    """
    if accelerator_type is None:
        if machine_type.startswith(_GPU_ONLY_FAMILIES):
            raise ValueError(
                f"{where}machine_type {machine_type!r} comes with GPUs: name its"
                " accelerator_type (or choose a GPU tier)"
            )
        return
    fixed = fixed_gpus(machine_type)
    if machine_type.startswith(_GPU_ONLY_FAMILIES) and fixed is None:
        raise ValueError(
            f"{where}machine_type {machine_type!r} is not a GPU machine type Vertex AI"
            f" Training offers; expected one of {sorted(FIXED_GPU_MACHINES)}"
        )
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
    if not accelerator_count:
        return
    if fixed is not None:
        if accelerator_count != fixed[1]:
            raise ValueError(
                f"{where}machine_type {machine_type} comes with exactly {fixed[1]}"
                f" {fixed[0]} (accelerator_count is {accelerator_count}); machine types with"
                f" {accelerator_count}: "
                + (
                    ", ".join(
                        m
                        for m, (g, n) in FIXED_GPU_MACHINES.items()
                        if g == fixed[0] and n == accelerator_count
                    )
                    or "none"
                )
            )
        return
    limits = N1_GPU_LIMITS[accelerator_type]
    if accelerator_count not in limits:
        raise ValueError(
            f"{where}accelerator_count {accelerator_count}: an N1 machine takes"
            f" {', '.join(map(str, limits))} {accelerator_type}"
        )
    match = _N1_PATTERN.match(machine_type)
    if match is None:
        raise ValueError(
            f"{where}machine_type {machine_type!r}: {accelerator_type} attaches to N1"
            " machine types (n1-standard-*, n1-highmem-*, n1-highcpu-*)"
        )
    cpus = int(match.group(2))
    if cpus > limits[accelerator_count]:
        raise ValueError(
            f"{where}machine_type {machine_type} has {cpus} vCPUs: {accelerator_count}"
            f" {accelerator_type} attach to an N1 machine of at most"
            f" {limits[accelerator_count]} vCPUs; take more GPUs or a smaller machine"
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
    machine = machine_type or shape.machine_type
    # A machine type that comes with its GPUs fixes their type and count: the tier's default
    # (4 T4s for multi-gpu, say) cannot be asked of it.
    fixed = fixed_gpus(machine)
    if fixed is not None and tier != BASIC:
        gpu = accelerator_type or fixed[0]
        count = accelerator_count or fixed[1]
    else:
        gpu = accelerator_type or shape.accelerator_type
        count = 0 if gpu is None else accelerator_count or shape.accelerator_count or 1
    resolved = TierShape(
        machine_type=machine,
        accelerator_type=gpu,
        accelerator_count=count,
        workers=shape.workers if workers is None else workers,
    )
    check_machine(resolved.machine_type, resolved.accelerator_type, "", resolved.accelerator_count)
    if tier == BASIC_GPU and resolved.accelerator_count != 1:
        raise ValueError(
            f"machine_type {machine} comes with {resolved.accelerator_count} GPUs: tier"
            f" {BASIC_GPU} has one GPU; use {MULTI_GPU}"
        )
    if tier == MULTI_GPU and resolved.accelerator_count < 2:
        raise ValueError(
            f"machine_type {machine} comes with one GPU: tier {MULTI_GPU} has several GPUs;"
            f" use {BASIC_GPU}"
        )
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
        count = spec.get("accelerator_count")
        if spec.get("accelerator_type") and not (isinstance(count, int) and count >= 1):
            raise ValueError(f"{where}.machine_spec.accelerator_count must be a positive integer")
        check_machine(
            machine_type, spec.get("accelerator_type"), f"{where}.machine_spec: ", count or 0
        )
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
