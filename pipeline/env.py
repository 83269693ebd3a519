"""Process setup every entry point runs before TensorFlow is imported."""

from __future__ import annotations

import logging
import os
import warnings

# TFT's TransformFeaturesLayer and TFMA are Keras 2 (tf_keras); TF 2.16 picks Keras 3 for
# tf.keras unless this is set before TensorFlow is first imported.
_ENV_DEFAULTS = {"TF_USE_LEGACY_KERAS": "1"}
_QUIET_ENV = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR"}
_NOISY_LOGGERS = (
    "absl",
    "apache_beam",
    "tensorflow",
    "tensorflow_transform",
    "tensorflow_model_analysis",
    "tensorflow_data_validation",
    "tfx",
    "ml_metadata",
    "h5py",
    "urllib3",
)


def configure_environment(verbose: bool = False) -> None:
    """Sets the environment TensorFlow needs and turns library noise down unless verbose."""
    for key, value in _ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
        return
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in _NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
