"""A finished run behind TensorFlow Serving's REST API (`trainctl serve`), with server-side
batching through graph mode's compiled forward. Needs the `serve` extra (Starlette, uvicorn)."""
