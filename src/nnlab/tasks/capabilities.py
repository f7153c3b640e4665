"""What a task may offer beyond its core (train, evaluate, predict), declared as Protocols and
checked with `isinstance` where a command needs it. A task without a capability gets one
line from that command ("the sentence-class task cannot be served"), never a traceback.

A task class has a capability when it defines every member of the Protocol: the three
built-in tasks have them all; `tests/sentence_class.py`, the fourth task, has none.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol, runtime_checkable

from torch import nn

from nnlab.errors import NnlabError
from nnlab.tasks.base import ExportSpec, PredictOptions, RequestLimits, Task


@runtime_checkable
class Servable(Protocol):
    """`nnlab serve`: how a request carries the task's inputs, and the page's widget."""

    request_kind: ClassVar[str]  # "files": multipart uploads; "json": a JSON body
    page_widget: ClassVar[str]  # the try-it page's widget: "classes", "spans", "score"
    request_help: ClassVar[str]  # the request body, for the API's clients

    def request_inputs(self, body: Any, files: list[tuple[str, bytes]], limits: RequestLimits
                       ) -> list[Any]:
        """A served request's inputs (its JSON body or uploaded files), checked as strictly as
        `read_inputs` checks command-line arguments and bounded by `limits` (NnlabError: the
        client's mistake)."""
        ...


@runtime_checkable
class Exportable(Protocol):
    """`nnlab export`: the model's ONNX graph, its inputs, outputs and the meta beside it."""

    def export_spec(self, model: nn.Module) -> ExportSpec: ...


@runtime_checkable
class ModelExamples(Protocol):
    """`nnlab models NAME`: a made-up `info` to build any of the task's models, no data read."""

    @classmethod
    def example_info(cls, input_shape: tuple[int, int, int], classes: int) -> dict[str, Any]: ...


@runtime_checkable
class Ensemblable(Protocol):
    """`nnlab ensemble`: finished runs combined into one model (nnlab.ensemble). Each member
    computes its outputs on its own encoding of the same examples (so members may read
    different vocabularies or encoders); the first member's task combines and judges them."""

    ensemble_rules: ClassVar[tuple[str, ...]]  # how outputs may be combined; the first is the default

    def ensemble_key(self) -> dict[str, Any]:
        """What every member's outputs must share (classes, tags, score range...)."""
        ...

    def outputs(self, model: nn.Module, data: Any) -> Any:
        """The model's outputs on prepared labelled data (probabilities, scores, emissions)."""
        ...

    def input_outputs(self, model: nn.Module, inputs: list[Any]) -> Any:
        """The model's outputs on `read_inputs`' raw inputs."""
        ...

    def combine(self, outputs: list[Any], weights: list[float], rule: str) -> Any:
        """The members' outputs as one model's, by `rule` (weights sum to 1)."""
        ...

    def judge(self, outputs: Any, data: Any, details: bool = False) -> dict[str, Any]:
        """`evaluate`'s figures from (combined) outputs on prepared labelled data."""
        ...

    def part(self, outputs: Any, data: Any, indices: list[int]) -> tuple[Any, Any]:
        """The outputs and prepared data of the examples at `indices` (ensemble selection
        judges halves of the validation split without computing outputs again)."""
        ...

    def present(self, outputs: Any, inputs: list[Any], options: PredictOptions) -> list[dict]:
        """`predict`'s results from (combined) outputs on raw inputs."""
        ...


@runtime_checkable
class EnsembleExportable(Protocol):
    """`nnlab export ENSEMBLE`: every member inside one graph, the rule computed in it."""

    def ensemble_spec(self, specs: list[ExportSpec], weights: list[float], rule: str,
                      names: list[str]) -> ExportSpec:
        """The members' export specs (same inputs) as one, whose module combines their outputs
        by `rule` (tasks.ensemble_graph.combined_spec); NnlabError for a rule no graph holds."""
        ...


VERBS = {Servable: "be served", Exportable: "be exported", ModelExamples: "describe its models",
         Ensemblable: "combine runs into an ensemble", EnsembleExportable: "export an ensemble"}


def members(capability: type) -> list[str]:
    """The names a task must define to have `capability` (its annotations and methods)."""
    return sorted({*vars(capability).get("__annotations__", {}),
                   *(n for n, v in vars(capability).items()
                     if not n.startswith("_") and (callable(v) or isinstance(v, classmethod)))})


def has(task: Task | type[Task], capability: type) -> bool:
    """True when the task (a class or an instance) defines every member of `capability`."""
    return isinstance(task, capability)


def require(task: Task | type[Task], capability: type) -> None:
    """One line when the task lacks `capability`, naming what it would have to define."""
    if not has(task, capability):
        missing = ", ".join(m for m in members(capability) if not hasattr(task, m))
        raise NnlabError(f"the {task.name} task cannot {VERBS[capability]} (it does not define "
                         f"{missing})")
