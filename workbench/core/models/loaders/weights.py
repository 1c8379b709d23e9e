"""Weights files: safetensors and weights-only ``.pt`` state_dicts, loaded into a built model."""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.core.models.loaders.common import check_model_path, first_line
from workbench.errors import ModelLoadError

WEIGHTS_HINT = "give a .safetensors or .pt/.pth state_dict file"


def read_state_dict(path_str: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or ``torch.load(weights_only=True)`` (no code runs)."""
    path = check_model_path(path_str, "weights file", WEIGHTS_HINT)
    hint = "save weights with safetensors or torch.save(model.state_dict(), path)"
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise ModelLoadError(
                f"{path}: not a valid safetensors file (truncated or corrupt: {first_line(exc)}); {hint}"
            ) from None
    if suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            detail = first_line(exc)
            if "Weights only load failed" in str(exc) or "Unsupported global" in str(exc):
                raise ModelLoadError(
                    f"{path}: refused: not a plain weights file (it holds pickled Python objects, which were "
                    f"not executed); {hint}"
                ) from None
            raise ModelLoadError(
                f"{path}: not a valid PyTorch weights file (truncated or corrupt: {detail}); {hint}"
            ) from None
        except Exception as exc:
            raise ModelLoadError(
                f"{path}: not a valid PyTorch weights file (truncated or corrupt: {first_line(exc)}); {hint}"
            ) from None
        return _extract_state_dict(obj, path)
    raise ModelLoadError(f"{path}: unsupported weights extension {suffix!r}; use .safetensors, .pt or .pth")


def _extract_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """Accept a plain state_dict or a checkpoint dict holding one under 'state_dict' or 'model'."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
        tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors
    raise ModelLoadError(
        f"{path}: holds a {type(obj).__name__} with no tensors, not a state_dict; "
        "save weights with torch.save(model.state_dict(), path)"
    )


def _strip_prefixes(sd: dict[str, torch.Tensor], expected: set[str]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes added by DataParallel ('module.') or torch.compile ('_orig_mod.')."""
    for prefix in ("module.", "_orig_mod."):
        if sd and not (set(sd) & expected) and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def _list(items: list[str], limit: int = 3) -> str:
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a ``.safetensors`` or ``.pt``/``.pth`` state_dict into ``module`` (strict keys and shapes).

    ``.pt`` files are read with ``weights_only=True``: anything but tensors and plain containers is
    refused and never executed.
    """
    p = check_model_path(path, "weights file", WEIGHTS_HINT)
    target = module.state_dict()
    sd = _strip_prefixes(read_state_dict(p), set(target))
    # tied weights (saved once by safetensors' save_model) may be missing under their alias
    by_storage: dict[tuple[int, int], set[str]] = {}
    for k, v in target.items():
        by_storage.setdefault((v.data_ptr(), v.numel()), set()).add(k)
    missing = [
        k
        for k in target
        if k not in sd and not (by_storage[(target[k].data_ptr(), target[k].numel())] & set(sd))
    ]
    unexpected = [k for k in sd if k not in target]
    mismatched = [
        f"{k} file {list(sd[k].shape)} vs model {list(target[k].shape)}"
        for k in target
        if k in sd and tuple(sd[k].shape) != tuple(target[k].shape)
    ]
    problems = []
    if mismatched:
        problems.append(f"shape mismatch: {_list(mismatched)}")
    if missing:
        problems.append(f"missing in file: {_list(missing)}")
    if unexpected:
        problems.append(f"not in model: {_list(unexpected)}")
    if problems:
        raise ModelLoadError(
            f"{p}: weights do not fit this model ({'; '.join(problems)}); use weights saved from the same "
            "model, width and class count"
        )
    try:
        with torch.no_grad():
            module.load_state_dict(sd, strict=False)
    except Exception as exc:
        raise ModelLoadError(f"{p}: loading weights failed ({first_line(exc)})") from None


def save_weights(module: nn.Module, path: str | Path, model_name: str = "") -> None:
    """Write ``module``'s state_dict as safetensors, atomically (``model_name`` goes into its metadata).

    Tensors are cloned to contiguous CPU copies so shared (tied) or strided tensors, which
    safetensors refuses, are written as independent tensors under every key.
    """
    from safetensors.torch import save_file

    from workbench.core.fileio import atomic_write_with

    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}
    metadata = {"format": "pt", **({"model": model_name} if model_name else {})}
    atomic_write_with(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
