"""Tasks: how batches become a loss, metrics and predictions. One module per task."""

from __future__ import annotations

from nnlab.tasks.base import StepOutput, Task

__all__ = ["StepOutput", "Task"]
