"""Running the one taxifare pipeline on Vertex AI Pipelines, Dataflow and Vertex AI Training.

Nothing here writes a DAG: `pipeline.dag.create_pipeline` builds the same pipeline for every
orchestrator and picks the Vertex flavour of a component when the config has a `vertex`
section. This package holds what that flavour needs (scale tiers, Dataflow options, endpoint
arguments), the compiler to a Vertex pipeline spec, and the job submission.
"""
