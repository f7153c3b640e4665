"""Tasks: one module per kind of problem, registered by name; importing this package fills
the registry (as `nnlab.models` does for models)."""

from __future__ import annotations

from nnlab.tasks import image, keyphrase, registry, similarity  # noqa: F401  (registration)
from nnlab.tasks.base import (
    ExportSpec,
    PredictOptions,
    RequestLimits,
    Section,
    Source,
    StepOutput,
    Task,
)
from nnlab.tasks.registry import find_data, get, names, register_task, require_data

__all__ = ["ExportSpec", "PredictOptions", "RequestLimits", "Section", "Source", "StepOutput", "Task",
           "find_data", "get", "names", "register_task", "registry", "require_data"]
