"""Checkpoints in safetensors and JSON, written atomically, read without unpickling.

A training checkpoint ``NAME`` (``last``) in the output directory is three files:

- ``NAME.safetensors``: the model's weights (a plain state dict, loadable on its own), with
  metadata (:func:`model_metadata`): the model's name and keywords, classes, input size,
  mean/std, where the run validated, the library version, and ``checkpoint_id``;
- ``NAME.state.safetensors``: the other tensors: AdamW moments and step counts
  (``optim.{param index}.{key}``) and the EMA weights (``ema.{name}``);
- ``NAME.json``: everything else: the run's configuration, epoch and step counters, the
  running sums of the epoch in progress, the best accuracy so far, the optimiser's
  parameter groups, the gradient scaler's state, and the ``checkpoint_id``.

Each file is written to a temporary file and moved into place with :func:`os.replace`; the
JSON is written last, and all three carry the same ``checkpoint_id``, so a checkpoint whose
files come from two different saves (a run killed between two moves) is detected on load.
The random generators need no saving: the training loop reseeds them from
``(seed, rank, step)`` at every step.

``best.safetensors`` holds the weights that scored the best validation top-1 (the EMA
weights when EMA is on), with the same metadata.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from ..io import atomic_write_bytes, atomic_write_json

FORMAT = "beyond-attention/1"


class CheckpointError(ValueError):
    """A checkpoint is missing, incomplete, or belongs to another model or run."""


def _plain(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU copies (safetensors refuses tensors that share memory)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}


def save_safetensors(path: str | Path, tensors: dict[str, torch.Tensor],
                     metadata: dict[str, Any] | None = None) -> None:
    """Write ``tensors`` to ``path`` atomically; metadata values are stored as strings
    (non-strings as JSON)."""
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in (metadata or {}).items()}
    atomic_write_bytes(path, st_save(_plain(tensors), metadata=meta))


def load_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """``(tensors, metadata)`` of a safetensors file (CPU tensors)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} does not exist")
    try:
        tensors = st_load(path.read_bytes())
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types
        raise CheckpointError(f"{path} is not a readable safetensors file: {e}") from None
    return tensors, metadata


def model_metadata(model_name: str, num_classes: int, in_chans: int, img_size: tuple[int, int],
                   mean: Any, std: Any, classes: list[str], *,
                   model_kwargs: dict[str, Any] | None = None,
                   model_arguments: dict[str, Any] | None = None, data: str | None = None,
                   dataset: str | None = None, val_split: str | None = None,
                   decode_size: int | None = None,
                   task: str = "image_classification") -> dict[str, Any]:
    """The metadata stored with model weights: what inference needs and nothing else.

    ``model``, ``model_kwargs`` (extra ``create_model`` keywords), ``model_arguments``
    (every family keyword the model was built with, ``models._registry.model_arguments``),
    ``num_classes``, ``in_chans`` and ``img_size`` rebuild the model; ``classes`` names
    its outputs; ``mean`` and ``std`` normalise its inputs; ``decode_size`` is the size
    images were decoded at (shorter side resized, centre crop; None: as stored); ``data``,
    ``dataset`` and ``val_split`` say where the run validated, so evaluation can default
    to them; ``task`` is the model config's (``ModelConfig.task``); ``version`` is the
    library's. Checkpoints written before these keys existed lack them; readers treat a
    missing key as unknown.
    """
    from .. import __version__

    return {
        "format": FORMAT, "version": __version__, "model": model_name, "task": task,
        "model_kwargs": dict(model_kwargs or {}),
        "model_arguments": None if model_arguments is None else dict(model_arguments),
        "num_classes": num_classes,
        "in_chans": in_chans, "img_size": list(img_size), "mean": list(mean),
        "std": list(std), "classes": classes, "decode_size": decode_size, "data": data,
        "dataset": dataset, "val_split": val_split,
    }


def parse_metadata(metadata: dict[str, str]) -> dict[str, Any]:
    """Decode the JSON values of :func:`model_metadata` (strings stay strings)."""
    out: dict[str, Any] = {}
    for k, v in metadata.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def rebuild_arguments(meta: dict[str, Any]) -> dict[str, Any]:
    """The ``create_model`` keywords that rebuild the model of decoded metadata ``meta``.

    Its recorded ``model_arguments`` (lists back as the tuples JSON turned into lists) with
    its ``model_kwargs`` over them; metadata written before ``model_arguments`` was recorded
    gives its ``model_kwargs`` alone, and the current registration fills in the rest.
    """
    recorded = meta.get("model_arguments")
    base = _tuples(recorded) if isinstance(recorded, dict) else {}
    return {**base, **(meta.get("model_kwargs") or {})}


def _tuples(value: Any) -> Any:
    """JSON's lists as tuples, in nested lists and dicts too."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def check_model_name(expected: str, found: str | None, where: str | Path) -> None:
    """Raise :class:`CheckpointError` if a checkpoint of model ``found`` is loaded for
    model ``expected``."""
    if found is not None and found != expected:
        raise CheckpointError(
            f"checkpoint {where} holds weights of model {found!r}, not {expected!r}; "
            f"pass --model {found} or a checkpoint of {expected}"
        )


def load_weights(model: nn.Module, path: str | Path, model_name: str | None = None
                 ) -> dict[str, Any]:
    """Load a safetensors state dict into ``model`` (strictly) and return its metadata.

    Raises:
        CheckpointError: the file names another model, or its keys or shapes do not match.
    """
    tensors, meta = load_safetensors(path)
    meta = parse_metadata(meta)
    if model_name is not None:
        check_model_name(model_name, meta.get("model"), path)
    own = model.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = sorted(k for k in set(own) & set(tensors) if own[k].shape != tensors[k].shape)
    if missing or unexpected or wrong:
        def show(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
        detail = "; ".join(
            f"{what}: {show(keys)}" for what, keys in
            (("missing", missing), ("unexpected", unexpected), ("shape differs", wrong)) if keys
        )
        raise CheckpointError(
            f"checkpoint {path} does not fit model {model_name or type(model).__name__} "
            f"({detail})"
        )
    model.load_state_dict(tensors, strict=True)
    return meta


def optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``opt.state_dict()`` into tensors (``optim.{i}.{key}``) and a JSON-able rest."""
    sd = opt.state_dict()
    tensors, extra = {}, {}
    for idx, entry in sd["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                extra.setdefault(str(idx), {})[key] = value
    groups = [{k: list(v) if isinstance(v, tuple) else v for k, v in g.items()}
              for g in sd["param_groups"]]
    return tensors, {"param_groups": groups, "state_extra": extra}


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         info: dict) -> None:
    """Inverse of :func:`optimizer_state`. Tensors shaped like their parameter take its
    memory layout (the file holds them contiguous): elementwise kernels over operands of
    one layout and of mixed layouts can round differently, so a resumed channels-last run
    needs the moments it had before to reach the same weights."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    for idx, entry in info.get("state_extra", {}).items():
        state.setdefault(int(idx), {}).update(entry)
    groups = [{k: tuple(v) if k == "betas" else v for k, v in g.items()}
              for g in info["param_groups"]]
    opt.load_state_dict({"state": state, "param_groups": groups})
    for group in opt.param_groups:
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if (isinstance(value, torch.Tensor) and value.shape == p.shape
                        and value.stride() != p.stride()):
                    opt.state[p][key] = torch.empty_like(p, dtype=value.dtype).copy_(value)


@dataclass
class Checkpoint:
    """A loaded training checkpoint: model weights, other tensors, JSON record."""

    model_state: dict[str, torch.Tensor]
    model_meta: dict[str, Any]
    state_tensors: dict[str, torch.Tensor]
    info: dict[str, Any]


def save_checkpoint(out_dir: str | Path, name: str, *, model_state: dict[str, torch.Tensor],
                    model_meta: dict[str, Any], state_tensors: dict[str, torch.Tensor],
                    info: dict[str, Any]) -> Path:
    """Write ``NAME.safetensors``, ``NAME.state.safetensors`` and ``NAME.json`` (last).

    Returns the JSON's path.
    """
    out_dir = Path(out_dir)
    ckpt_id = f"{info.get('global_step', 0)}-{uuid.uuid4().hex[:12]}"
    save_safetensors(out_dir / f"{name}.safetensors", model_state,
                     {**model_meta, "checkpoint_id": ckpt_id})
    save_safetensors(out_dir / f"{name}.state.safetensors", state_tensors,
                     {"format": FORMAT, "checkpoint_id": ckpt_id})
    path = out_dir / f"{name}.json"
    atomic_write_json(path, {**info, "format": FORMAT, "checkpoint_id": ckpt_id})
    return path


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Args:
        path: ``NAME.json``, or the output directory (then ``last.json``).

    Raises:
        CheckpointError: a file is missing or unreadable, or the three files are not from
            the same save.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "last.json"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        info = json.loads(path.read_text())
    except ValueError as e:
        raise CheckpointError(f"checkpoint {path} is not valid JSON: {e}") from None
    stem = path.name[: -len(".json")]
    weights, wmeta = load_safetensors(path.with_name(f"{stem}.safetensors"))
    state, smeta = load_safetensors(path.with_name(f"{stem}.state.safetensors"))
    ids = {info.get("checkpoint_id"), wmeta.get("checkpoint_id"), smeta.get("checkpoint_id")}
    if len(ids) != 1:
        raise CheckpointError(
            f"checkpoint {path} is incomplete: its files come from different saves "
            f"(ids {sorted(str(i) for i in ids)}); the run was stopped while saving"
        )
    return Checkpoint(weights, parse_metadata(wmeta), state, info)
