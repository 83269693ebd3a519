"""Keeps AutoGraph from rewriting library code when our functions are traced.

AutoGraph converts the Python source of every function a `tf.function` calls, unless the
function's module matches one of its "do not convert" rules. TensorFlow 2.16's rules name
`keras` (Keras 2 lived there, written to run unconverted) but not `tf_keras`, where Keras 2
lives now (TF_USE_LEGACY_KERAS=1). Without a rule, the first `model.fit` and every exported
signature re-parse and rewrite thousands of Keras functions: on this project's model that
was about 35 s of a 45 s training run on two cores, for graphs identical to the unconverted
ones. TensorFlow Transform is graph-style library code too. Our own code is still converted.
"""

from __future__ import annotations

# Libraries whose functions are called as they are, as TensorFlow does for `keras`.
UNCONVERTED_LIBRARIES = ("tf_keras", "tensorflow_transform")


def skip_autograph_of_libraries() -> None:
    """Adds "do not convert" rules for UNCONVERTED_LIBRARIES (idempotent, process-wide)."""
    # The rule table is not public API; the module exists in every TF 2.x release.
    from tensorflow.python.autograph.core import config

    present = {str(rule) for rule in config.CONVERSION_RULES}
    missing = tuple(
        rule
        for rule in (config.DoNotConvert(name) for name in UNCONVERTED_LIBRARIES)
        if str(rule) not in present
    )
    if missing:
        config.CONVERSION_RULES = missing + tuple(config.CONVERSION_RULES)
