"""A Hugging Face BERT folder (``config.json`` + ``model.safetensors``) as our ``nn.BERT``.

Hugging Face's ``BertModel`` and our ``BERT`` compute the same function: embeddings (word +
position + token type, then LayerNorm), post-LN encoder layers (self-attention -> residual ->
LayerNorm -> GELU feed-forward -> residual -> LayerNorm) and a tanh pooler on ``[CLS]``. Only the
names differ. Hugging Face splits a layer into ``attention.self`` (the Q, K, V projections),
``attention.output`` (the output projection and the first LayerNorm), ``intermediate`` (the first
feed-forward layer) and ``output`` (the second one and the second LayerNorm); ours follows
torch.nn.TransformerEncoderLayer. Per layer i::

    Hugging Face: encoder.layer.{i}. + ...    ours: encoder.layers.{i}. + ...
    attention.self.query                      self_attn.q_proj
    attention.self.key                        self_attn.k_proj
    attention.self.value                      self_attn.v_proj
    attention.output.dense                    self_attn.out_proj
    attention.output.LayerNorm                norm1
    intermediate.dense                        linear1
    output.dense                              linear2
    output.LayerNorm                          norm2

and outside the layers ``pooler.dense`` -> ``pooler``; the ``embeddings.*`` names are the same.
Every one of these is a ``.weight`` / ``.bias`` pair, and a Linear's weight is (out, in) in both.
The file also stores ``embeddings.position_ids`` (the constant 0..max_position_embeddings-1 that
Hugging Face keeps as a buffer); we compute ``arange(T)`` instead, so that key is checked and
dropped. Any other name is an error: nothing is loaded half-way.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from ..nn.models import BERT
from ..nn.module import ModuleError
from ..serialization import CheckpointError, load_safetensors

REQUIRED_FILES = ("config.json", "model.safetensors", "vocab.txt")

# Hugging Face's ``hidden_act`` -> our activation name. "gelu" is the exact (erf) GELU; the
# "gelu_new" / "gelu_pytorch_tanh" names are the tanh approximation GPT-2 uses.
_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}

# Hugging Face name -> our name, applied as regular-expression substitutions (the table above).
_RENAMES = [
    (r"^encoder\.layer\.(\d+)\.attention\.self\.query\.", r"encoder.layers.\1.self_attn.q_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.key\.", r"encoder.layers.\1.self_attn.k_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.value\.", r"encoder.layers.\1.self_attn.v_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"encoder.layers.\1.self_attn.out_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"encoder.layers.\1.norm1."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"encoder.layers.\1.linear1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"encoder.layers.\1.linear2."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"encoder.layers.\1.norm2."),
    (r"^pooler\.dense\.", "pooler."),
]
_RENAMES = [(re.compile(pattern), replacement) for pattern, replacement in _RENAMES]
_POSITION_IDS = "embeddings.position_ids"


def check_model_dir(model_dir, required=REQUIRED_FILES) -> str:
    """``model_dir`` as a string, after checking that it is a folder holding every file in
    ``required``; otherwise one CheckpointError naming the folder and each missing file."""
    model_dir = os.fspath(model_dir)
    if not os.path.isdir(model_dir):
        raise CheckpointError(f"cannot load the model folder '{model_dir}': no such folder")
    missing = [name for name in required if not os.path.isfile(os.path.join(model_dir, name))]
    if missing:
        raise CheckpointError(f"cannot load the model folder '{model_dir}': it has no "
                              f"{' and no '.join(missing)} (a BERT folder needs {', '.join(required)})")
    return model_dir


def read_json(path, kind=dict):
    """The JSON object (``kind=dict``) or array (``kind=list``) in ``path``; a CheckpointError
    naming the file if it holds anything else."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"cannot load '{os.fspath(path)}': not a readable JSON file ({e})") from None
    if not isinstance(value, kind):
        expected = "an object" if kind is dict else "an array"
        raise CheckpointError(f"cannot load '{os.fspath(path)}': expected a JSON {expected}, got a "
                              f"{type(value).__name__}")
    return value


def bert_kwargs(config: dict, path="config.json") -> dict:
    """The arguments of ``nn.BERT`` for a Hugging Face BERT ``config.json`` (as a dict)."""
    def get(key, kind=int):
        if key not in config:
            raise CheckpointError(f"cannot load '{path}': the key '{key}' is missing")
        value = config[key]
        if kind is int and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
            raise CheckpointError(f"cannot load '{path}': '{key}' is {value!r}; expected a positive integer")
        return value

    if config.get("model_type", "bert") != "bert":
        raise CheckpointError(f"cannot load '{path}': model_type is {config['model_type']!r}; this "
                              f"loader reads BERT models (model_type 'bert')")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(f"cannot load '{path}': position_embedding_type is "
                              f"{config['position_embedding_type']!r}; only 'absolute' is implemented")
    act = config.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS:
        raise CheckpointError(f"cannot load '{path}': hidden_act {act!r} is not one of {sorted(_ACTIVATIONS)}")
    eps = config.get("layer_norm_eps", 1e-12)
    if not (isinstance(eps, (int, float)) and not isinstance(eps, bool) and eps > 0):
        raise CheckpointError(f"cannot load '{path}': layer_norm_eps is {eps!r}; expected a positive number")
    pad_id = config.get("pad_token_id", 0)
    if pad_id is not None and not (isinstance(pad_id, int) and 0 <= pad_id < get("vocab_size")):
        raise CheckpointError(f"cannot load '{path}': pad_token_id {pad_id!r} is not an id of the "
                              f"{get('vocab_size')}-token vocabulary")
    C, H = get("hidden_size"), get("num_attention_heads")
    if C % H:
        raise CheckpointError(f"cannot load '{path}': hidden_size {C} is not divisible by "
                              f"num_attention_heads {H}")
    return dict(vocab_size=get("vocab_size"), d_model=C, n_layers=get("num_hidden_layers"), n_heads=H,
                max_len=get("max_position_embeddings"), dim_feedforward=get("intermediate_size"),
                type_vocab_size=get("type_vocab_size"), layer_norm_eps=float(eps), pad_id=pad_id,
                activation=_ACTIVATIONS[act], dropout=config.get("hidden_dropout_prob", 0.1))


def hf_to_ours(name: str) -> str:
    """Our parameter name for a Hugging Face BERT name (the module docstring's table)."""
    for pattern, replacement in _RENAMES:
        renamed, n = pattern.subn(replacement, name)
        if n:
            return renamed
    return name


def load_bert(model_dir) -> BERT:
    """Our ``nn.BERT`` with the weights of a Hugging Face BERT folder, in eval mode.

    Reads ``config.json`` (the sizes) and ``model.safetensors`` (the weights, with
    nptransformer.serialization, NumPy only). Every weight must land on a parameter and every
    parameter must get a weight (strict loading); ``embeddings.position_ids`` is the one stored
    name that is dropped (see the module docstring). Errors are CheckpointErrors naming the file.
    """
    model_dir = check_model_dir(model_dir, ("config.json", "model.safetensors"))
    config_path = os.path.join(model_dir, "config.json")
    kwargs = bert_kwargs(read_json(config_path), config_path)
    weights_path = os.path.join(model_dir, "model.safetensors")
    weights = load_safetensors(weights_path)

    position_ids = weights.pop(_POSITION_IDS, None)
    if position_ids is not None and not np.array_equal(position_ids.reshape(-1),
                                                       np.arange(position_ids.size)):
        raise CheckpointError(f"cannot load '{weights_path}': {_POSITION_IDS} is not 0, 1, 2, ...; "
                              f"this BERT computes positions as arange(T)")
    state = {hf_to_ours(name): array for name, array in weights.items()}

    model = BERT(**kwargs)
    try:
        model.load_state_dict(state, strict=True)
    except ModuleError as e:
        raise CheckpointError(f"cannot load '{weights_path}' into a BERT built from config.json: {e}") from None
    return model.eval()
