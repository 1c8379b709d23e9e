"""TorchScript archives (trusted like code) and torch.export ``.pt2`` archives (scanned for code first)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.core.events import suppress_warnings
from workbench.core.models.loaders.common import LoadedModel, check_model_path, first_line, quiet_logger
from workbench.errors import ModelLoadError

TORCHSCRIPT_HINT = "save one with torch.jit.save(torch.jit.script(model), path)"


EXPORT_HINT = "save one with torch.export.save(torch.export.export(model, (example,)), 'model.pt2')"


def load_torchscript_file(path_str: str | Path, hint: str = TORCHSCRIPT_HINT) -> Any:
    """``torch.jit.load`` a TorchScript archive (trusted like code: TorchScript has no safe mode)."""
    path = check_model_path(path_str, "TorchScript file", hint)
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"{path}: not a TorchScript archive (not a zip; truncated or another format); {hint}"
        )
    try:
        with suppress_warnings(DeprecationWarning):  # the user chose TorchScript; thread-safe (GUI jobs)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        text = str(exc)
        if "constants.pkl" in text or "code/" in text:
            raise ModelLoadError(
                f"{path}: not a TorchScript archive (looks like a torch.save file, e.g. weights); {hint}, "
                "or use it as model.weights with a zoo/python model"
            ) from None
        raise ModelLoadError(f"{path}: cannot load TorchScript ({first_line(exc)}); {hint}") from None


def load_torchscript(path_str: str, num_classes: int, input_shape: tuple[int, ...]) -> LoadedModel:
    module = load_torchscript_file(path_str)
    name = Path(path_str).expanduser().name
    return LoadedModel(module, "torchscript", input_shape, num_classes, description=f"TorchScript {name}")


def _check_pt2_safe(path: Path, zf: zipfile.ZipFile) -> None:
    """Refuse a .pt2 that would make ``torch.export.load`` run code.

    torch.export.load unpickles some members with ``weights_only=False`` (sample inputs, weights
    and constants marked ``use_pickle``, opaque objects) and loads AOTInductor shared libraries.
    We let it read an archive only if every pickled member also loads with ``weights_only=True``
    (tensors and plain containers) and there are no custom/opaque objects or compiled code.
    """
    refuse = f"{path}: refused: this torch.export archive"
    names = zf.namelist()
    for name in names:
        parts = name.split("/")
        rel = "/".join(parts[1:])  # members live under one root folder named after the archive
        base = parts[-1]
        if rel.startswith(("data/aotinductor/", "data/executorch/", "data/mtia")):
            raise ModelLoadError(f"{refuse} holds compiled code ({rel}), which Workbench does not load")
        if base.startswith(("custom_obj_", "opaque_obj_")):
            raise ModelLoadError(
                f"{refuse} holds pickled Python objects ({rel}), which were not executed; "
                "export a model whose constants are plain tensors"
            )
        if name.endswith(".pt"):
            _require_weights_only(zf.read(name), path, rel)
        if name.endswith("_config.json") and ("/data/weights/" in name or "/data/constants/" in name):
            folder = name.rsplit("/", 1)[0]
            config = json.loads(zf.read(name)).get("config", {})
            for entry in config.values():
                if isinstance(entry, dict) and entry.get("use_pickle"):
                    member = f"{folder}/{entry.get('path_name', '')}"
                    _require_weights_only(zf.read(member), path, member.split("/", 1)[-1])


def _require_weights_only(data: bytes, path: Path, member: str) -> None:
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        raise ModelLoadError(
            f"{path}: refused: member {member} of this torch.export archive is not plain tensor data "
            "(it holds pickled Python objects, which were not executed); re-export the model with torch.export.save"
        ) from None


def load_export_archive(path_str: str | Path, hint: str = EXPORT_HINT) -> Any:
    """``torch.export.load`` a .pt2 archive, after refusing anything that would run code (see module doc)."""
    path = check_model_path(path_str, "torch.export archive", hint)
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"{path}: not a torch.export archive (not a zip; truncated or another format); {hint}"
        )
    try:
        with zipfile.ZipFile(path) as zf:
            if not any(n.endswith("archive_format") for n in zf.namelist()):
                raise ModelLoadError(
                    f"{path}: not a torch.export archive (looks like a torch.save or TorchScript file); {hint}"
                )
            _check_pt2_safe(path, zf)
    except (zipfile.BadZipFile, OSError, KeyError, ValueError, EOFError) as exc:
        raise ModelLoadError(f"{path}: corrupt torch.export archive ({first_line(exc)}); {hint}") from None
    try:
        # torch's own deprecation notes are not the user's (suppress_warnings: thread-safe, unlike catch_warnings)
        with quiet_logger("torch.export"), quiet_logger("torch.serialization"), suppress_warnings(FutureWarning):
            return torch.export.load(str(path))  # it logs a full traceback before raising: hence the quiet
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: cannot load torch.export archive ({first_line(exc)}); {hint}"
        ) from None


def exported_module(program: Any, path: Path) -> nn.Module:
    """``program.module()`` with nn.Module's own ``train()``/``eval()`` (see "Trainable rules")."""
    try:
        module = program.module()
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot build a module from this torch.export archive "
                             f"({first_line(exc)}); {EXPORT_HINT}") from None
    # .module() makes train()/eval() raise NotImplementedError. The rest of the engine calls
    # model.eval() on every model, so restore nn.Module's methods: they only flip the `training`
    # flags, the graph keeps the behaviour it was exported with (export in eval mode).
    for attr in ("train", "eval"):
        if attr in vars(module):
            delattr(module, attr)
    return module


def load_export(path_str: str, num_classes: int, input_shape: tuple[int, ...]) -> LoadedModel:
    path = Path(path_str).expanduser()
    module = exported_module(load_export_archive(path), path)
    return LoadedModel(module, "export", input_shape, num_classes, description=f"torch.export {path.name}")
