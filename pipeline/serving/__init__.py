"""`taxifare serve`: the pushed model over TF Serving's REST API, with a request log.

Modules: `config` (the server's settings), `validation` (request JSON to model inputs),
`versions` (loading and hot-swapping model versions), `batching` (merging concurrent
requests into one model call), `request_log` (the TFRecord log of what was served), `app`
(the Starlette application), `server` (uvicorn), `client` (`taxifare predict`), `loadtest`
(latency and throughput under concurrency) and `cli` (the two subcommands).

TensorFlow is imported only where a model is loaded or called, so `--help` stays fast.
"""
