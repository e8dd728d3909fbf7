"""`zhplm serve`: models over HTTP (FastAPI + uvicorn) in the style of Hugging Face
text-embeddings-inference, with dynamic batching.

- `models.py`: which task a directory implies (`infer_task`), `load_models`, `Settings`,
  `ServedModel` (measure inputs in tokens, run a batch through its pipeline);
- `batching.py`: `BatchQueue`, a request queue per model and its worker thread
  (framework-independent);
- `metrics.py`: a tiny Prometheus text registry;
- `app.py`: `create_app(models, settings) -> FastAPI` (routes, limits, errors) and `serve`.

FastAPI and uvicorn are imported only here, so the rest of zhplm runs without them.
"""

from typing import Any

from zhplm.serving.models import ServedModel, Settings, infer_task, load_models

__all__ = ["ServedModel", "Settings", "create_app", "infer_task", "load_models", "serve"]


def __getattr__(name: str) -> Any:  # lazy: FastAPI loads only when asked for
    if name in ("create_app", "serve"):
        from zhplm.serving import app

        return getattr(app, name)
    raise AttributeError(name)
