# The pipeline image: every Vertex AI Pipelines step, the Trainer's Vertex AI Training VMs and
# the Dataflow workers run it. Build it from the repository root (see the README):
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPOSITORY/pipeline:TAG .
#
# The environment is the one the tests run in: Python 3.10 and a virtualenv synced from
# requirements.lock by uv, as `make` builds .venv (not pip over the TFX image's conda
# environment, which would keep its own TensorFlow and Keras beside the lock's). The last
# step runs `taxifare check-image`, so an image that cannot run a step does not build.
FROM python:3.10.13-bookworm

# Beam's SDK worker boot, which Dataflow starts in a custom worker image: taken from Beam's own
# image of the locked version (the official recipe for custom containers).
COPY --from=apache/beam_python3.10_sdk:2.59.0 /opt/apache/beam /opt/apache/beam

# TFT's TransformFeaturesLayer and TFMA are Keras 2: TensorFlow 2.16 must load tf_keras as
# tf.keras in every process of the image, which the variable does before TF is imported.
ENV TF_USE_LEGACY_KERAS=1
ENV VIRTUAL_ENV=/opt/taxifare/venv
ENV PATH=/opt/taxifare/venv/bin:$PATH

# The exact versions the pipeline is tested with, installed as `make venv` installs them
# (the same uv, `uv pip sync` of the lock). Runtime only: the lock's test and lint tools,
# and what only they need, are left out (the list is checked against the lock by
# tests/vertex/test_image.py). Some pins are source distributions with C/C++ code
# (pyfarmhash, crcmod): this base image has the compilers.
# --build-arg LOCK=requirements-gpu.lock builds the GPU variant: the same pins plus the CUDA
# libraries TensorFlow loads (for the vertex.training tiers with GPUs).
ARG UV_VERSION=0.13.9
ARG LOCK=requirements.lock
ARG DEV_ONLY="pytest pytest-timeout ruff iniconfig pluggy duckdb sqlglot"
COPY ${LOCK} /opt/taxifare/requirements.lock
RUN python -m venv /opt/taxifare/venv \
    && python -m pip install --no-cache-dir "uv==${UV_VERSION}" \
    && pattern="^($(echo $DEV_ONLY | tr ' ' '|'))==" \
    && grep -v -E "$pattern" /opt/taxifare/requirements.lock > /opt/taxifare/runtime.lock \
    && uv pip sync --no-cache --python /opt/taxifare/venv/bin/python /opt/taxifare/runtime.lock

# The package: pipeline (with the curated schema as package data) and taxifare_modules, which
# the compiled spec and Dataflow reference by dotted path. Installed, not left as a source
# tree, so nothing depends on the working directory.
COPY pyproject.toml README.md /tmp/taxifare/
COPY pipeline /tmp/taxifare/pipeline
COPY taxifare_modules /tmp/taxifare/taxifare_modules
RUN uv pip install --no-cache --python /opt/taxifare/venv/bin/python --no-deps /tmp/taxifare \
    && rm -rf /tmp/taxifare

# The compiled spec names the curated schema by a fixed path (IMAGE_SCHEMA_FILE in
# pipeline/vertex/component_config.py): link it to the installed package data.
RUN schema="$(cd / && python -c 'import importlib.resources as r; print(r.files("pipeline") / "schema" / "schema.pbtxt")')" \
    && ln -s "$schema" /opt/taxifare/schema.pbtxt

# The image is the one we test: compile the shipped Vertex configs here and check that every
# executor, module function and artifact type of their specs imports, that the lock's
# versions are installed, that tf.keras is Keras 2 and that the schema is in place.
COPY configs /tmp/taxifare-configs
RUN cd /tmp && taxifare check-image --lock /opt/taxifare/requirements.lock \
      --config /tmp/taxifare-configs/vertex.yaml \
      --config /tmp/taxifare-configs/vertex-bigquery.yaml \
    && rm -rf /tmp/taxifare-configs

# Dataflow starts the Beam SDK harness through this entrypoint; Vertex and TFX give each
# pipeline step and training replica its own command, which replaces it.
ENTRYPOINT ["/opt/apache/beam/boot"]
