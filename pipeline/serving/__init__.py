"""`taxifare serve`: the pushed model over TF Serving's REST and gRPC APIs, with a request log.

Modules: `config` (the server's settings, the `serving:` config section), `validation`
(request JSON to validated trips), `tensors` (gRPC TensorProtos to validated trips),
`versions` (loading and hot-swapping model versions), `batching` (merging concurrent
requests into one model call), `request_log` (the TFRecord log of what was served, its one
reader and writer), `core` (the transport-free predict path both protocols call), `app`
(the REST adapter, an ASGI application), `http` (uvicorn's HTTP protocol with limits),
`grpc_service` (the gRPC adapter), `server` (runs it all under uvicorn), `client`
(`taxifare predict`) and `cli` (the two subcommands).

TensorFlow is imported only where a model is loaded or called, so `--help` stays fast.
"""
