"""taxifare's pipeline package: config, DAG, runners, components, serving and monitoring.

The custom artifact types are reachable here by name (`pipeline.DriftVerdict`), which is
their TYPE_NAME: TFX's Vertex entrypoint imports a custom type by the name the compiled spec
records, and the Vertex compiler only takes `<module>.<Class>` names. They are imported on
first use, so that `import pipeline` stays free of TFX.
"""

from typing import Any

_LAZY = {
    "DriftVerdict": "pipeline.components.monitoring",
    "SkewVerdict": "pipeline.components.monitoring",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
