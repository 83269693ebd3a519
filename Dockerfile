# The pipeline image: every Vertex AI Pipelines step, the Trainer's Vertex AI Training VMs and
# the Dataflow workers run it. Build it from the repository root (see the README):
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPOSITORY/pipeline:TAG .
#
# The official TFX image has TFX 1.16.0 with its TensorFlow and Beam, and the Beam SDK worker
# boot as its ENTRYPOINT, which Dataflow needs to use it as a worker image. Its ENTRYPOINT
# and WORKDIR are kept: Vertex and TFX give each container its command.
FROM gcr.io/tfx-oss-public/tfx:1.16.0

# TFT's TransformFeaturesLayer and TFMA are Keras 2: TensorFlow 2.16 must load tf_keras as
# tf.keras in every process of the image, which the variable does before TF is imported.
ENV TF_USE_LEGACY_KERAS=1

# The exact versions the pipeline is tested with; pip changes only what the base differs in.
# Runtime only: the lock's test and lint tools, and what only they need, are left out (the
# list is checked against the lock by tests/vertex/test_image.py).
ARG DEV_ONLY="pytest pytest-timeout ruff iniconfig pluggy duckdb sqlglot"
COPY requirements.lock /tmp/taxifare/requirements.lock
RUN pattern="^($(echo $DEV_ONLY | tr ' ' '|'))==" \
    && grep -v -E "$pattern" /tmp/taxifare/requirements.lock > /tmp/taxifare/runtime.lock \
    && python -m pip install --no-cache-dir -r /tmp/taxifare/runtime.lock

# The package: pipeline (with the curated schema as package data) and taxifare_modules, which
# the compiled spec and Dataflow reference by dotted path. Installed, not left as a source
# tree, so nothing depends on the working directory.
COPY pyproject.toml README.md /tmp/taxifare/
COPY pipeline /tmp/taxifare/pipeline
COPY taxifare_modules /tmp/taxifare/taxifare_modules
RUN python -m pip install --no-cache-dir --no-deps /tmp/taxifare && rm -rf /tmp/taxifare

# The compiled spec names the curated schema by a fixed path (IMAGE_SCHEMA_FILE in
# pipeline/vertex/component_config.py): link it to the installed package data, and fail the
# build when the package does not ship it.
RUN schema="$(cd / && python -c 'import importlib.resources as r; print(r.files("pipeline") / "schema" / "schema.pbtxt")')" \
    && mkdir -p /opt/taxifare \
    && ln -s "$schema" /opt/taxifare/schema.pbtxt \
    && test -s /opt/taxifare/schema.pbtxt
