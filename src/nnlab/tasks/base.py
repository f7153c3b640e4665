"""A task owns everything specific to one kind of problem; the floors above only ask it.

A task is a class registered by name (`tasks.registry`), like a model. Its class attributes
say what it is (name, main metric and direction, unit, where its data usually lives); its
methods fall in three groups:

- data: read a data set (train, validation, test), learn what the model needs from the
  training part (`info`: classes, vocabulary...), and turn labelled examples into what
  `evaluate` takes;
- training: build the model, yield batches, compute a batch's loss (`step`);
- use: evaluate (one path for every split), predict on raw inputs, say how results print,
  and add its own sections (per-class, per-type tables, plots) to a report.

A task object is made for training (`for_training`: reads the data and learns `info`) or for
a finished run (`for_run`: `info` comes from the run folder and no training data is read).
Optional hooks have defaults here; the core ones raise NotImplementedError. Serving, export
and model examples are capabilities beyond the core (`tasks.capabilities`), which a task
has when it defines their members.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from nnlab import distributed, plots
from nnlab.config import RunConfig, section_choices, section_keys
from nnlab.device import Runtime
from nnlab.errors import NnlabError
from nnlab.models.summary import parameter_table
from nnlab.tasks.info import Record

E = TypeVar("E")  # a task's labelled examples (ImageData, TaggedText, PairData)
SPLITS = ("val", "test", "all")  # what `nnlab evaluate --split` names


@dataclass
class StepOutput:
    """One training step's figures. The sums stay on the device (no sync per step); the loop
    adds them up over the epoch and divides by the counts."""

    loss: torch.Tensor  # scalar: what is back-propagated (a mean over the batch's examples)
    count: int  # examples in the batch
    loss_sum: torch.Tensor  # the logged training loss, summed over `loss_count` items
    loss_count: int
    metric_sum: torch.Tensor  # the training metric, summed over `metric_count` items
    metric_count: int

    @classmethod
    def per_example(cls, loss: torch.Tensor, count: int, metric_sum: torch.Tensor) -> StepOutput:
        """Loss and metric both counted per example (images, pairs)."""
        return cls(loss, count, loss.detach() * count, count, metric_sum, count)


@dataclass
class Source(Generic[E]):
    """One data set as read from disk: its training examples, validation examples (the data's
    own file, or a carve-out of the training file; None where the task carves later) and test
    examples when there is a test file."""

    path: str
    train: E
    val: E | None
    test: E | None
    fingerprint: str  # sha256 prefix of what was read: resuming on other data is refused
    format: str  # a phrase for people: "CoNLL BIO, validation file valid.txt"


@dataclass
class PredictOptions:
    """`nnlab predict`'s options. Each task declares its own subclass (`Task.predict_options`)
    with the fields it reads; a flag of another task is refused in one line."""

    @classmethod
    def from_flags(cls, task: str, given: dict[str, Any]) -> PredictOptions:
        """The options from the flags a user gave (`{"top_k": 5}`), refusing the ones the
        task does not take, each named as its flag."""
        known = [f.name for f in fields(cls)]
        for key in given:
            if key not in known:
                theirs = ", ".join(f"--{k.replace('_', '-')}" for k in known) or "none"
                raise NnlabError(f"--{key.replace('_', '-')}: not an option of {task} runs "
                                 f"(their options: {theirs})")
        return cls(**given)


@dataclass
class FileOptions(PredictOptions):
    """Text tasks: the inputs are texts, or with `--files` text files ('-' reads stdin)."""

    files: bool = False


@dataclass
class RequestLimits:
    """What one served request may cost, checked by `Task.request_inputs` before any model runs
    (`nnlab serve --max-chars/--max-words/--max-image-pixels/--max-request-pixels`): a request
    inside the body cap can still ask for minutes of compute and gigabytes of memory."""

    max_chars: int = 20_000  # characters of one text
    max_words: int = 10_000  # words (tokens) across all of one request's texts
    max_pixels: int = 16_000_000  # pixels of one image, read from its header before decoding
    max_request_pixels: int = 64_000_000  # pixels across one request's images


@dataclass
class ExportSpec:
    """How a task's model goes into an ONNX graph (`nnlab export`)."""

    module: nn.Module  # what the graph computes: the model, or a wrapper fixing its outputs
    inputs: Callable[[int, torch.Generator], dict[str, torch.Tensor]]  # (batch, gen) -> named inputs
    outputs: list[str]
    dynamic_axes: dict[str, dict[int, str]]  # per input and output: which axes vary
    decide: Callable[[Any, dict[str, torch.Tensor]], list]  # (first output, inputs) -> predictions
    meta: dict[str, Any]  # what a user needs without nnlab: classes, vocabulary, preprocessing
    # files shipped beside the graph, by the suffix that replaces `.onnx` in their name: a
    # CRF's Viterbi decoder (".viterbi.py"), a word-piece tokenizer (".tokenizer.json"), the
    # builder of a contextual tagger's piece inputs (".pieces.py")
    extras: dict[str, Path] = field(default_factory=dict)


@dataclass
class Section:
    """A task's own table in a report (per-class accuracy, per-type F1)."""

    title: str
    header: list[str]
    rows: list[list[str]]


# -- what models may offer a task, declared rather than probed ----------------------------------
@runtime_checkable
class EpochAware(Protocol):
    """A module whose training changes with the epoch (e.g. a layer frozen for the first ones):
    the loop calls `set_epoch` before each epoch."""

    def set_epoch(self, epoch: int) -> None: ...


@runtime_checkable
class DataInitialised(Protocol):
    """A net with a layer initialised from training inputs (e.g. `fast`'s whitening conv)."""

    def init_from_data(self, x: torch.Tensor) -> None: ...


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode and under inference mode, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was_training)


def shared(n: int, compute: Callable[[list[int]], list[Any]]) -> list[Any]:
    """`compute(indices)` for the items 0..n-1, one result per item, in order. Under torchrun
    each rank computes its share (every world-th item) and every rank gets all results."""
    if not distributed.current().enabled:
        return compute(list(range(n)))
    idx = distributed.my_indices(n)
    return distributed.gather_in_order(n, idx, compute(idx))


class Task:
    """The base of every task: its declared attributes, and defaults of the optional hooks."""

    name: ClassVar[str]
    main_metric: ClassVar[str]  # the validation metric that picks the best epoch
    train_metric: ClassVar[str]  # the cheap metric tracked during training
    higher_is_better: ClassVar[bool] = True  # of the main metric
    unit: ClassVar[str]  # what an example is called ("images", "sentences", "pairs")
    word_vectors: ClassVar[bool] = False  # takes pretrained word vectors (--embeddings)
    labels: ClassVar[dict[str, str]] = {}  # metric -> its name in tables ("span_f1": "span F1")
    extra_metrics: ClassVar[tuple[str, ...]] = ()  # validation metrics shown beside the main one
    config_columns: ClassVar[dict[str, str]] = {}  # report column -> config key shown per run
    detail_keys: ClassVar[tuple[str, ...]] = ()  # bulky evaluation fields kept out of summaries
    supplied: ClassVar[tuple[str, ...]] = ()  # model options the task fills in from the data
    data_folders: ClassVar[tuple[str, ...]] = ()  # where its data usually lies below $NNLAB_DATA
    download: ClassVar[str | None] = None  # a `nnlab data get` name that fetches its data
    # the [data] sections it reads beyond the common one (config.ImageDataConfig, ...) and the
    # other task-specific keys it reads; `reads` and `choices` (the sections' Literal fields)
    # follow from them
    data_sections: ClassVar[tuple[type, ...]] = ()
    extra_reads: ClassVar[frozenset[str]] = frozenset()
    predict_help: ClassVar[str] = "inputs"  # what `nnlab predict` takes for it
    # untrained reference scorers (name -> function of the validation examples -> the metrics
    # and predictions), run beside the variants of a study
    baselines: ClassVar[dict[str, Callable[[Any], dict[str, Any]]]] = {}
    tta_modes: ClassVar[tuple[str, ...]] = ("none",)  # test-time augmentations it offers
    predict_options: ClassVar[type[PredictOptions]] = PredictOptions  # `nnlab predict`'s flags it takes
    # the task-specific config keys it reads (config.task_keys()): another one set by the user
    # would be silently ignored, so it is refused in one line
    reads: ClassVar[frozenset[str]] = frozenset()
    choices: ClassVar[dict[str, tuple[str, ...]]] = {}  # its keys' allowed values

    # the record of what it learns from its data (a tasks.info.Record: ImageInfo...), read
    # back field by field from a saved run
    info_type: ClassVar[type[Record]] = Record
    # the figures `write_plots` makes in a run's plots/ folder (file name, what it shows), which
    # reports show beside each run's training curves
    run_figures: ClassVar[tuple[tuple[str, str], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.reads = section_keys(cls.data_sections) | cls.extra_reads
        cls.choices = section_choices(cls.data_sections)

    def __init__(self, cfg: RunConfig, runtime: Runtime, info: Record | None):
        self.cfg, self.runtime = cfg, runtime
        self._info: Any = info  # the task's info_type; None until prepare_training learns it

    # -- making one ---------------------------------------------------------------------------
    @classmethod
    def for_training(cls, cfg: RunConfig, runtime: Runtime, source: Any = None) -> Task:
        """A task ready to train: its data read (`source`, else `data.path`) and `info` learnt."""
        task = cls(cfg, runtime, None)
        if source is None:
            if not cfg.data.path:
                raise NnlabError(f"data.path: no {cls.name} data given")
            source = task.load_source(cfg.data.path)
        task.source = source
        task.prepare_training(source)
        return task

    @classmethod
    def for_run(cls, cfg: RunConfig, runtime: Runtime, info: Record | dict[str, Any],
                where: str = "config.json") -> Task:
        """A task for a finished run: evaluate and predict from `info` (a record, or the JSON
        saved at `where`, read field by field), without training data."""
        if not isinstance(info, Record):
            info = cls.info_type.from_json(info, where)
        return cls(cfg, runtime, info)

    def info(self) -> Any:
        """What the task learnt from the training data (its `info_type`), saved with the config
        so a run can be used without it. Always holds `data` (a DataInfo): path, format,
        fingerprint, example counts."""
        return self._info

    # -- data ---------------------------------------------------------------------------------
    @classmethod
    def generated_data(cls) -> str:
        """The built-in generated data set (`--data generated`), in the task's real format."""
        raise NotImplementedError

    def load_source(self, path: str) -> Any:
        """Read a data set (folder, file or archive) into a `Source`-like object."""
        raise NotImplementedError

    def prepare_training(self, source: Any) -> None:
        """Learn `info` from the training part and make `self.train`, `self.val` ready."""
        raise NotImplementedError

    def describe(self) -> str:
        """A line about the data printed before training (vocabulary coverage...); may be empty."""
        return ""

    def labelled(self, data: str | None, split: str) -> tuple[Any, str]:
        """(examples, where) for `nnlab evaluate`: the run's own data when `data` is None."""
        raise NotImplementedError

    def prepare(self, examples: Any, where: str) -> Any:
        """Labelled examples made ready for `evaluate` (encoded with the run's `info`)."""
        raise NotImplementedError

    def evaluation_notes(self, examples: Any, where: str) -> dict[str, Any]:
        """Extra fields for `nnlab evaluate` about the examples (repaired spans...)."""
        return {}

    # -- training -----------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        """The model of this run's config and `info`, freshly initialised (no data read)."""
        raise NotImplementedError

    def init_model(self, model: nn.Module) -> None:
        """Initialisation that needs the training data (pretrained vectors, whitening)."""

    def steps_per_epoch(self) -> int:
        raise NotImplementedError

    def train_batches(self, gen: torch.Generator, epoch: int) -> Iterator[Any]:
        """The epoch's global batches, as indices into the training examples (a list or a 1-d
        tensor each), in the order `gen` draws. Under torchrun the training loop gives each
        rank its part of every batch and weights its loss: a task holds no distributed code."""
        raise NotImplementedError

    def collate(self, indices: Any, gen: torch.Generator, epoch: int) -> Any:
        """The training examples at `indices` as one batch on the device, for `step`
        (augmented, where the task augments, with `gen`)."""
        raise NotImplementedError

    def step(self, model: nn.Module, batch: Any) -> StepOutput:
        raise NotImplementedError

    def validate(self, model: nn.Module) -> dict[str, Any]:
        """The per-epoch check on the validation data (split between ranks under torchrun)."""
        return self.evaluate(model, self.val)

    def finalize(self, model: nn.Module) -> dict[str, Any]:
        """A choice made on validation data after training, stored in the best weights (the
        decoding offset of a tagger). Returns what was chosen, for the summary."""
        return {}

    # -- evaluation and prediction ------------------------------------------------------------
    def evaluate(self, model: nn.Module, data: Any, details: bool = False,
                 tta: str = "none") -> dict[str, Any]:
        """Loss and metrics of `model` on prepared data: validation, test or other labelled
        data alike. `details`: also per-class/per-type figures and predictions (the
        `detail_keys`); `tta`: test-time augmentation where the task has any."""
        raise NotImplementedError

    def read_inputs(self, inputs: list[str], options: PredictOptions) -> list[Any]:
        """`nnlab predict`'s arguments as raw inputs (files read, pairs split)."""
        raise NotImplementedError

    def predict(self, model: nn.Module, inputs: list[Any], options: PredictOptions) -> list[dict]:
        raise NotImplementedError

    def public_info(self) -> dict[str, Any]:
        """What a client of the served model should know of its outputs (classes, tags...)."""
        return {}

    @classmethod
    def format_predictions(cls, results: list[dict]) -> list[str]:
        raise NotImplementedError

    @classmethod
    def format_evaluation(cls, result: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    # -- reports ------------------------------------------------------------------------------
    def write_plots(self, folder: Path, val: dict[str, Any], title: str) -> None:
        """The run's own plots of its final validation evaluation (confusion, scatter)."""

    @classmethod
    def report_sections(cls, runs: list[tuple[str, dict[str, Any]]]) -> list[Section]:
        """Tables comparing runs (name, final validation evaluation) beyond the main table."""
        return []

    def model_table(self, model: nn.Module) -> tuple[list[str], list[list[str]]]:
        """The model's layers and parameters, for reports and `nnlab models NAME`."""
        return (["module", "layer", "parameters"],
                [[name, kind, f"{n:,}"] for name, kind, n in parameter_table(model)])

    @classmethod
    def label(cls, metric: str) -> str:
        return cls.labels.get(metric, metric)


CONFUSION_FIGURES = (("confusion_val.png", "confusion matrix"),)  # what write_confusion makes


def write_confusion(task: Task, folder: Path, val: dict[str, Any], title: str) -> None:
    """`write_plots` of the tasks whose detailed evaluation holds a confusion matrix."""
    plots.confusion(val["confusion"], val["classes"], folder / CONFUSION_FIGURES[0][0],
                    title=f"{title}: validation, best epoch")


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell: a float to `digits` places, None as a dash."""
    if value is None:
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise NnlabError(f"--split {split}: unknown split ({', '.join(SPLITS)})")


def first(data: E, limit: int) -> E:
    """`data.limit` for text tasks: the first `limit` examples (all when 0 or more than there are)."""
    return data.subset(list(range(limit))) if 0 < limit < len(data) else data  # type: ignore[attr-defined]
