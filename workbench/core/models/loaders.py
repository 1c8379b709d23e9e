"""Load a model from any supported source, load/save weights, and check a model fits the data.

Every user mistake (missing file, folder, corrupt or truncated file, wrong kind of file, unsafe
content, class not found, constructor error, shape mismatch) becomes a one-line
``ModelLoadError`` naming the file and saying what would work; no raw traceback escapes.

Model file policy (this module is the ONE place that opens model files; every path that reads
one: runs, ``bench``, ``quantize``, ``export``, the distillation teacher, sensitivity analysis,
reports, sweeps and the GUI panels, goes through the functions below, and a test forbids raw
``torch.load``/``torch.export.load``/``torch.jit.load``/``onnx.load`` calls anywhere else):

* Data only, never executed: ``.safetensors``; ``.pt``/``.pth``/``.bin`` weights, read with
  ``torch.load(weights_only=True)`` (pickled Python objects are refused without running them).
* Scanned, then loaded: ``.pt2`` torch.export archives. ``torch.export.load`` unpickles parts of an
  archive with ``weights_only=False`` (and would load AOTInductor libraries), so every pickled
  member must also load with ``weights_only=True``, and archives with compiled code or custom
  objects are refused (``load_export_archive``).
* Checked, then loaded: ONNX. External data must stay inside the model's folder (no absolute
  paths, no ``..``), checked before the ONNX checker or onnxruntime reads a byte of it.
* Trusted like code: a ``.py`` model file is imported (that is the point of it) and TorchScript
  has no safe mode (torch warns crafted TorchScript can run code). Only use files from people you
  trust. ``SystemExit``/``KeyboardInterrupt`` raised by such code become a one-line error.
* Every path must be an existing, non-empty regular file (a FIFO or device would block forever).

Trainable rules (``LoadedModel.trainable``):

* ``zoo``, ``python``: yes.
* ``torchscript``: yes, optimizer steps update its parameters and ``train()``/``eval()`` work; but a
  *traced* module may have baked in train/eval-dependent behaviour (dropout, BN) at trace time.
* ``export``: no. ``ExportedProgram.module()`` is a frozen inference graph: BN/dropout behaviour is
  fixed at export time (export in eval mode). torch makes its ``train()``/``eval()`` raise; we
  restore the plain nn.Module methods so ``model.eval()`` works everywhere, but they only flip
  flags. Evaluate/benchmark it, or fine-tune the original python/zoo model instead.
* ``onnx``: no; there is no torch module at all (evaluation and benchmarks via onnxruntime).
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import difflib
import hashlib
import importlib.util
import inspect
import io
import json
import logging
import os
import pickle
import sys
import textwrap
import typing
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workbench.core.events import suppress_warnings
from workbench.errors import ModelLoadError, short
from workbench.recipe import ModelSection

from .zoo import build_zoo_model

KINDS = ("zoo", "python", "torchscript", "export", "onnx")
WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


@dataclass
class LoadedModel:
    """A model ready for the pipeline.

    ``input_shape`` excludes the batch dim. For ``onnx`` it is the graph's declared input shape with
    symbolic dims filled in from the data (the raw graph shape, ``None`` for symbolic dims, is kept
    in ``declared_input_shape``, batch dim included).
    """

    module: nn.Module | None
    kind: str
    input_shape: tuple[int, ...]
    num_classes: int
    onnx_path: Path | None = None
    description: str = ""
    declared_input_shape: tuple[int | None, ...] | None = None
    declared_num_classes: int | None = None

    @property
    def trainable(self) -> bool:
        """True where optimizer steps work: zoo, python and torchscript modules (see module doc)."""
        return self.module is not None and self.kind in ("zoo", "python", "torchscript")

    @property
    def label(self) -> str:
        return self.description or self.kind


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception message, prefixed with its type name."""
    text = str(exc).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if len(line) > 200:
        line = line[:197] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _exit_call(exc: BaseException) -> str:
    """How user code tried to stop the process, for a one-line error (we never let it)."""
    if isinstance(exc, SystemExit):
        return f"called sys.exit({exc.code!r})" if exc.code is not None else "called sys.exit()"
    return "raised KeyboardInterrupt"


def check_model_path(path: str | Path, what: str, hint: str) -> Path:
    """Resolve ``path`` and make sure it is an existing, non-empty regular file.

    A FIFO, socket or device is refused before anything opens it: reading one blocks forever.
    """
    if not str(path).strip():
        raise ModelLoadError(f"no {what} path given; {hint}")
    p = Path(path).expanduser()
    if not p.exists():
        raise ModelLoadError(f"{p}: {what} not found; {hint}")
    if p.is_dir():
        raise ModelLoadError(f"{p}: is a folder, not a {what}; {hint}")
    if not p.is_file():
        raise ModelLoadError(f"{p}: not a regular file (a pipe, socket or device); {hint}")
    if p.stat().st_size == 0:
        raise ModelLoadError(f"{p}: file is empty; {hint}")
    return p


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Silence a library logger that prints tracebacks for errors we turn into one line anyway."""
    logger = logging.getLogger(name)
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


def _shape_str(shape: tuple[Any, ...] | list[Any] | torch.Size) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


# --------------------------------------------------------------------------------------------
# load_model
# --------------------------------------------------------------------------------------------


def load_model(section: ModelSection, num_classes: int, input_shape: tuple[int, ...]) -> LoadedModel:
    """Load the model ``section`` describes; then its weights, unless they are empty or ``run:ID``.

    ``run:ID`` weights are resolved by the pipeline (it knows the run store), not here.
    """
    input_shape = tuple(int(d) for d in input_shape)
    kind = section.source
    if kind == "zoo":
        module = build_zoo_model(section.zoo, num_classes, input_shape, section.width, **section.kwargs)
        width = f", width {section.width:g}" if section.width != 1.0 else ""
        loaded = LoadedModel(module, "zoo", input_shape, num_classes, description=f"zoo:{section.zoo}{width}")
    elif kind == "python":
        loaded = _load_python(section, num_classes, input_shape)
    elif kind == "torchscript":
        loaded = _load_torchscript(section.path, num_classes, input_shape)
    elif kind == "export":
        loaded = _load_export(section.path, num_classes, input_shape)
    elif kind == "onnx":
        loaded = _load_onnx(section.path, num_classes, input_shape)
    else:  # pragma: no cover - the recipe validates source
        raise ModelLoadError(f"unknown model source {kind!r}; choose one of: {', '.join(KINDS)}")

    weights = section.weights.strip()
    if weights and not weights.startswith("run:"):
        if loaded.module is None:
            raise ModelLoadError(
                f"{weights}: weights cannot be applied to an ONNX model (it carries its own); clear model.weights"
            )
        load_weights(loaded.module, weights)
    return loaded


def _import_file(path: Path) -> Any:
    """Import a .py file under a unique module name (so two files called model.py never clash)."""
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    stem = "".join(ch if ch.isalnum() else "_" for ch in path.stem)
    name = f"workbench_user_model_{stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelLoadError(
            f"{path}: cannot be imported as Python; give a .py file defining an nn.Module class"
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses, pickling and typing need the module registered
    folder = str(path.resolve().parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)  # let the file import its sibling modules
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise ModelLoadError(
            f"{path}: syntax error at line {exc.lineno}: {exc.msg}; fix the file so `python {path.name}` runs"
        ) from None
    except (SystemExit, KeyboardInterrupt) as exc:
        sys.modules.pop(name, None)
        raise ModelLoadError(f"{path}: importing it {_exit_call(exc)}; put script code under "
                             "`if __name__ == \"__main__\":` so importing the file only defines the model") from None
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ModelLoadError(f"{path}: importing it failed with {_first_line(exc)}") from None
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)
    return module


def _load_python(section: ModelSection, num_classes: int, input_shape: tuple[int, ...]) -> LoadedModel:
    """Import ``section.path`` and build ``section.class_name(**section.kwargs)``.

    ``class_name`` names an nn.Module subclass or a *factory function* returning one (e.g.
    ``def ResNet18(): return ResNet(BasicBlock, [2, 2, 2, 2])``). A function is only called when it
    is a factory by static inspection: annotated ``-> nn.Module`` (or a subclass), or every
    ``return`` builds a module class or another factory. So naming a script helper such as
    ``test()`` is refused without running it. If the callable has a ``num_classes`` parameter and
    kwargs do not set it, the data's class count is passed. With no ``class_name``, the file's only
    nn.Module class (or, without classes, its only factory) is used.
    """
    path = check_model_path(section.path, "Python model file", "give a .py file defining an nn.Module class")
    if path.suffix != ".py":
        raise ModelLoadError(f"{path}: expected a .py file for model.source = 'python'")
    mod = _import_file(path)
    classes, factories = model_callables(mod)
    found = _found(classes, factories)
    name = section.class_name.strip()
    if not name:
        only = classes if classes else factories
        if len(only) != 1:
            raise ModelLoadError(f"{path}: set model.class_name; {found}")
        name = only[0]
    obj = getattr(mod, name, None)
    if obj is None:
        close = difflib.get_close_matches(name, classes + factories, n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
        raise ModelLoadError(f"{path}: no class or factory {short(name)!r}{hint}; {found}")
    if isinstance(obj, type):
        if not issubclass(obj, nn.Module):
            raise ModelLoadError(f"{path}: {name!r} is a class but not an nn.Module; {found}")
    elif inspect.isfunction(obj):
        if not _is_factory(obj):
            raise ModelLoadError(
                f"{path}: {name!r} is a function but not a model factory, so it was not called (a factory is "
                f"annotated `-> nn.Module` or returns a module it builds, e.g. `return Net()`); {found}")
    else:
        raise ModelLoadError(f"{path}: {name!r} is a {type(obj).__name__}, not an nn.Module class or factory; {found}")
    kwargs = dict(section.kwargs)
    try:
        params = inspect.signature(obj).parameters
        if "num_classes" in params and "num_classes" not in kwargs:
            kwargs["num_classes"] = num_classes
    except (TypeError, ValueError):
        pass
    try:
        module = obj(**kwargs)
    except (SystemExit, KeyboardInterrupt) as exc:
        raise ModelLoadError(f"{path}: {name}(...) {_exit_call(exc)} instead of returning a model") from None
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: {name}(**{short(kwargs)}) failed with {_first_line(exc)}; check model.kwargs"
        ) from None
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{path}: {name}(...) returned {type(module).__name__}, not an nn.Module")
    return LoadedModel(module, "python", input_shape, num_classes, description=f"{name} from {path.name}")


def model_callables(mod: Any) -> tuple[list[str], list[str]]:
    """(nn.Module classes, public factory functions) defined in an imported model file, sorted by name.

    Nothing is called: factories are recognised statically (see ``_is_factory``). Private helpers
    (``_name``) are not listed, though naming one in ``class_name`` still works.
    """
    own = {n: obj for n, obj in vars(mod).items() if getattr(obj, "__module__", None) == mod.__name__}
    classes = sorted(n for n, obj in own.items() if isinstance(obj, type) and issubclass(obj, nn.Module))
    factories = sorted(n for n, obj in own.items()
                       if inspect.isfunction(obj) and not n.startswith("_") and _is_factory(obj))
    return classes, factories


def _found(classes: list[str], factories: list[str]) -> str:
    text = f"nn.Module classes defined in this file: {', '.join(classes) if classes else 'none'}"
    if factories:
        text += f"; model factories (functions returning one): {', '.join(factories)}"
    return text


def _is_factory(func: Any, _seen: frozenset[int] = frozenset()) -> bool:
    """True when ``func`` builds an nn.Module, judged without calling it.

    Its return annotation decides when there is one; otherwise every ``return`` in its body (not
    in nested functions) must return a call of an nn.Module class or of another factory, or a name
    assigned from such a call in the function.
    """
    if id(func) in _seen:
        return False
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        hints = {}
    ret = hints.get("return", inspect.signature(func).return_annotation)
    if ret is not inspect.Signature.empty:
        return isinstance(ret, type) and issubclass(ret, nn.Module)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except (OSError, TypeError, SyntaxError):
        return False
    fn = tree.body[0] if tree.body else None
    if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
        return False
    seen = _seen | {id(func)}
    namespace = func.__globals__

    def builds_module(call: ast.expr) -> bool:
        if not isinstance(call, ast.Call):
            return False
        target = _resolve(call.func, namespace)
        if isinstance(target, type):
            return issubclass(target, nn.Module)
        return inspect.isfunction(target) and _is_factory(target, seen)

    built: set[str] = set()
    returns: list[ast.expr | None] = []
    stack: list[ast.AST] = list(fn.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef):
            continue  # nested scopes return for themselves
        if isinstance(node, ast.Assign) and builds_module(node.value):
            built.update(t.id for t in node.targets if isinstance(t, ast.Name))
        if isinstance(node, ast.Return):
            returns.append(node.value)
        stack.extend(ast.iter_child_nodes(node))
    return bool(returns) and all(
        r is not None and (builds_module(r) or (isinstance(r, ast.Name) and r.id in built)) for r in returns)


def _resolve(expr: ast.expr, namespace: dict[str, Any]) -> Any:
    """The object a Name or dotted Attribute refers to in ``namespace`` (attribute lookups only, no calls)."""
    if isinstance(expr, ast.Name):
        return namespace.get(expr.id, getattr(builtins, expr.id, None))
    if isinstance(expr, ast.Attribute):
        base = _resolve(expr.value, namespace)
        return getattr(base, expr.attr, None) if base is not None else None
    return None


TORCHSCRIPT_HINT = "save one with torch.jit.save(torch.jit.script(model), path)"
EXPORT_HINT = "save one with torch.export.save(torch.export.export(model, (example,)), 'model.pt2')"
ONNX_HINT = "export one with torch.onnx.export(model, (example,), 'model.onnx', dynamo=True)"


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
        raise ModelLoadError(f"{path}: cannot load TorchScript ({_first_line(exc)}); {hint}") from None


def _load_torchscript(path_str: str, num_classes: int, input_shape: tuple[int, ...]) -> LoadedModel:
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
        raise ModelLoadError(f"{path}: corrupt torch.export archive ({_first_line(exc)}); {hint}") from None
    try:
        # torch's own deprecation notes are not the user's (suppress_warnings: thread-safe, unlike catch_warnings)
        with _quiet_logger("torch.export"), _quiet_logger("torch.serialization"), suppress_warnings(FutureWarning):
            return torch.export.load(str(path))  # it logs a full traceback before raising: hence the quiet
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: cannot load torch.export archive ({_first_line(exc)}); {hint}"
        ) from None


def exported_module(program: Any, path: Path) -> nn.Module:
    """``program.module()`` with nn.Module's own ``train()``/``eval()`` (see "Trainable rules")."""
    try:
        module = program.module()
    except Exception as exc:
        raise ModelLoadError(f"{path}: cannot build a module from this torch.export archive "
                             f"({_first_line(exc)}); {EXPORT_HINT}") from None
    # .module() makes train()/eval() raise NotImplementedError. The rest of the engine calls
    # model.eval() on every model, so restore nn.Module's methods: they only flip the `training`
    # flags, the graph keeps the behaviour it was exported with (export in eval mode).
    for attr in ("train", "eval"):
        if attr in vars(module):
            delattr(module, attr)
    return module


def _load_export(path_str: str, num_classes: int, input_shape: tuple[int, ...]) -> LoadedModel:
    path = Path(path_str).expanduser()
    module = exported_module(load_export_archive(path), path)
    return LoadedModel(module, "export", input_shape, num_classes, description=f"torch.export {path.name}")


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------


def _onnx_tensors(graph: Any) -> list[Any]:
    """Every TensorProto in a graph, its node attributes and all subgraphs (If/Loop/Scan bodies)."""
    from onnx import AttributeProto

    out = list(graph.initializer)
    out += [s.values for s in graph.sparse_initializer] + [s.indices for s in graph.sparse_initializer]
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                out.append(attr.t)
            elif attr.type == AttributeProto.TENSORS:
                out += list(attr.tensors)
            elif attr.type == AttributeProto.GRAPH:
                out += _onnx_tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    out += _onnx_tensors(g)
    return out


def onnx_external_files(model: Any, path: Path) -> list[Path]:
    """The external data files an ONNX model refers to; refuses locations outside its folder."""
    from onnx import TensorProto

    folder = path.resolve().parent
    files: dict[Path, None] = {}
    for tensor in _onnx_tensors(model.graph):
        if tensor.data_location != TensorProto.EXTERNAL:
            continue
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        if not location:
            raise ModelLoadError(
                f"{path}: tensor {tensor.name!r} has external data without a location; re-export it"
            )
        loc = Path(location)
        target = (folder / loc).resolve()
        if (
            loc.is_absolute()
            or os.path.isabs(location)
            or ".." in loc.parts
            or not target.is_relative_to(folder)
        ):
            raise ModelLoadError(
                f"{path}: refused: external data location {location!r} of tensor {tensor.name!r} points outside "
                "the model's folder; keep .onnx data files next to the .onnx file"
            )
        if not target.is_file():
            raise ModelLoadError(
                f"{path}: external data file {location!r} (tensor {tensor.name!r}) is missing; "
                "copy it next to the .onnx file"
            )
        files[target] = None
    return list(files)


def _onnx_value_dims(value: Any) -> tuple[int | None, ...] | None:
    t = value.type
    if not t.HasField("tensor_type") or not t.tensor_type.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in t.tensor_type.shape.dim)


def read_onnx(path: str | Path, external_data: bool = False) -> Any:
    """Read an ONNX graph with every failure as a ModelLoadError.

    Without ``external_data`` only the protobuf is parsed. With it, the external data files are
    checked to lie inside the model's folder *before* they are read, then loaded.
    """
    import onnx

    p = check_model_path(path, "ONNX file", ONNX_HINT)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as exc:
        raise ModelLoadError(
            f"{p}: not a valid ONNX file (truncated or another format: {_first_line(exc)}); {ONNX_HINT}"
        ) from None
    if external_data and onnx_external_files(model, p):
        from onnx.external_data_helper import load_external_data_for_model

        try:
            load_external_data_for_model(model, str(p.resolve().parent))
        except Exception as exc:
            raise ModelLoadError(f"{p}: cannot read its external data ({_first_line(exc)})") from None
    return model


def checked_onnx(path: str | Path) -> Any:
    """The ONNX graph (no external data loaded) after every safety check (external data in its folder)."""
    p = check_model_path(path, "ONNX file", ONNX_HINT)
    model = read_onnx(p)
    onnx_external_files(model, p)
    return model


def _load_onnx(path_str: str, num_classes: int, input_shape: tuple[int, ...]) -> LoadedModel:
    """Validate an ONNX file (no torch module is built) and read its input/output shapes."""
    import onnx

    hint = ONNX_HINT
    path = check_model_path(path_str, "ONNX file", hint)
    model = checked_onnx(path)  # safety first: before the checker touches any data file
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: ONNX checker rejected the model ({_first_line(exc)}); {hint}"
        ) from None
    initializers = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in initializers]
    if not inputs:
        raise ModelLoadError(f"{path}: the ONNX graph has no inputs; {hint}")
    if len(inputs) > 1:
        names = ", ".join(v.name for v in inputs)
        raise ModelLoadError(
            f"{path}: the ONNX graph has {len(inputs)} inputs ({names}); Workbench needs exactly one"
        )
    declared = _onnx_value_dims(inputs[0])
    resolved = input_shape
    if declared is not None and len(declared) == len(input_shape) + 1:
        resolved = tuple(d if d is not None else s for d, s in zip(declared[1:], input_shape, strict=True))
    out_dims = _onnx_value_dims(model.graph.output[0]) if model.graph.output else None
    declared_classes = out_dims[-1] if out_dims else None
    return LoadedModel(
        None,
        "onnx",
        resolved,
        num_classes,
        onnx_path=path,
        description=f"ONNX {path.name}",
        declared_input_shape=declared,
        declared_num_classes=declared_classes,
    )


# --------------------------------------------------------------------------------------------
# weights
# --------------------------------------------------------------------------------------------


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
                f"{path}: not a valid safetensors file (truncated or corrupt: {_first_line(exc)}); {hint}"
            ) from None
    if suffix in (".pt", ".pth", ".bin"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            detail = _first_line(exc)
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
                f"{path}: not a valid PyTorch weights file (truncated or corrupt: {_first_line(exc)}); {hint}"
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
        raise ModelLoadError(f"{p}: loading weights failed ({_first_line(exc)})") from None


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


# --------------------------------------------------------------------------------------------
# model / data compatibility
# --------------------------------------------------------------------------------------------


def _first_layer_hint(module: nn.Module) -> str:
    """What the first weighted layer expects, e.g. 'expects 3 input channels (first layer stem.0: Conv2d)'."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Conv2d | nn.Conv1d | nn.Conv3d):
            return f"expects {m.in_channels} input channels (first layer {name}: {type(m).__name__})"
        if isinstance(m, nn.Linear):
            return f"expects {m.in_features} input features (first layer {name}: Linear)"
        original = getattr(m, "original_name", "")  # TorchScript keeps the original class name
        if original in ("Conv2d", "Conv1d", "Conv3d") and hasattr(m, "in_channels"):
            return f"expects {m.in_channels} input channels (first layer {name}: {original})"
        if original == "Linear" and hasattr(m, "in_features"):
            return f"expects {m.in_features} input features (first layer {name}: Linear)"
    return "expects a different input"


def check_model_data_compat(loaded: LoadedModel, num_classes: int, input_shape: tuple[int, ...]) -> None:
    """Fail early, with one line, when the model cannot take the data or has the wrong class count.

    Torch modules: one eval-mode forward on a zeros batch of 2 (mode restored afterwards); for
    torch.export graphs also a batch of 3, to catch a batch size fixed at export time.
    ONNX: the graph's declared shapes are compared (symbolic dims match anything); a fixed batch
    dim is refused, since evaluation and benchmarks run other batch sizes.
    """
    shape = tuple(int(d) for d in input_shape)
    name = loaded.label
    if loaded.module is None:
        _check_onnx_compat(loaded, num_classes, shape)
        return
    module = loaded.module
    ref = next((t for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point()), None)
    dtype = ref.dtype if ref is not None else torch.float32
    device = ref.device if ref is not None else torch.device("cpu")
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            out = module(torch.zeros((2, *shape), dtype=dtype, device=device))
    except (SystemExit, KeyboardInterrupt) as exc:
        raise ModelLoadError(f"model {name}: its forward {_exit_call(exc)}; a model must return logits") from None
    except Exception as exc:
        raise ModelLoadError(
            f"model {name} {_first_layer_hint(module)} but data gives {_shape_str(shape)} "
            f"(forward failed: {_first_line(exc)})"
        ) from None
    finally:
        module.train(was_training)
    if isinstance(out, tuple | list) and out and isinstance(out[0], torch.Tensor):
        out = out[0]
    elif isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        out = out["logits"]
    if not isinstance(out, torch.Tensor):
        raise ModelLoadError(
            f"model {name} returns {type(out).__name__}; a classifier must return a logits tensor"
        )
    if out.dim() != 2 or out.shape[0] != 2:
        raise ModelLoadError(
            f"model {name} outputs shape {_shape_str(tuple(out.shape))} for a batch of 2; "
            "a classifier must output [batch, classes]"
        )
    if out.shape[-1] != num_classes:
        raise ModelLoadError(
            f"model {name} outputs {out.shape[-1]} classes but data has {num_classes}; "
            "match the model's head to the data (zoo models follow the data automatically)"
        )
    if loaded.kind == "export":
        _probe_fixed_batch(module, shape, dtype, device, name)


def _probe_fixed_batch(
    module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device, name: str
) -> None:
    """A torch.export graph exported without a dynamic batch dim only takes its example batch size."""
    problem = ""
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            out = module(torch.zeros((3, *shape), dtype=dtype, device=device))
        if isinstance(out, tuple | list) and out:
            out = out[0]
        if isinstance(out, torch.Tensor) and (out.dim() == 0 or out.shape[0] != 3):
            problem = f"batch of 3 gave output {_shape_str(tuple(out.shape))}"
    except Exception as exc:
        problem = _first_line(exc)
    finally:
        module.train(was_training)
    if problem:
        raise ModelLoadError(
            f"model {name} takes batch size 2 but not 3 ({problem}): it was exported with a fixed "
            "batch size; re-export with dynamic_shapes=({0: torch.export.Dim('batch')},)"
        )


def _check_onnx_compat(loaded: LoadedModel, num_classes: int, shape: tuple[int, ...]) -> None:
    name = loaded.label
    declared = loaded.declared_input_shape
    if declared is not None and declared and declared[0] is not None:
        raise ModelLoadError(
            f"model {name} has a fixed batch size {declared[0]} (input {_shape_str(declared)}); evaluation and "
            "benchmarks need other batch sizes: re-export with a dynamic batch axis "
            "(torch.onnx.export(..., dynamo=True, dynamic_shapes=({0: torch.export.Dim('batch')},)))"
        )
    if declared is not None:
        sample = declared[1:]
        if len(sample) != len(shape) or any(
            d is not None and d != s for d, s in zip(sample, shape, strict=False)
        ):
            raise ModelLoadError(
                f"model {name} expects input {_shape_str(declared)} (batch first) but data gives {_shape_str(shape)}"
            )
    if loaded.declared_num_classes is not None and loaded.declared_num_classes != num_classes:
        raise ModelLoadError(
            f"model {name} outputs {loaded.declared_num_classes} classes but data has {num_classes}"
        )


def onnx_file_size(path: Path) -> int:
    """Size of an ONNX model including external data files in its folder that it references."""
    size = path.stat().st_size
    try:
        model = read_onnx(path)
        locations = {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}
        size += sum((path.parent / loc).stat().st_size for loc in locations if (path.parent / loc).exists())
    except Exception:  # size of the main file is still a true lower bound
        pass
    return size


def onnx_input_name(model: Any) -> str:
    inits = {t.name for t in model.graph.initializer}
    inputs = [v.name for v in model.graph.input if v.name not in inits]
    if len(inputs) != 1:
        raise ModelLoadError(f"this needs a single-input model; this one has {len(inputs)}: {inputs}")
    return inputs[0]
