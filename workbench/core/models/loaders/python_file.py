"""``.py`` model files: import the file (trusted like code), find the class or factory, build the model."""

from __future__ import annotations

import ast
import builtins
import contextlib
import difflib
import hashlib
import importlib.util
import inspect
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any

from torch import nn

from workbench.core.models.loaders.common import LoadedModel, check_model_path, exit_call, first_line
from workbench.errors import ModelLoadError, short
from workbench.recipe import ModelSection


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
        raise ModelLoadError(f"{path}: importing it {exit_call(exc)}; put script code under "
                             "`if __name__ == \"__main__\":` so importing the file only defines the model") from None
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ModelLoadError(f"{path}: importing it failed with {first_line(exc)}") from None
    finally:
        if added:
            with contextlib.suppress(ValueError):
                sys.path.remove(folder)
    return module


def load_python(section: ModelSection, num_classes: int, input_shape: tuple[int, ...]) -> LoadedModel:
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
        raise ModelLoadError(f"{path}: {name}(...) {exit_call(exc)} instead of returning a model") from None
    except Exception as exc:
        raise ModelLoadError(
            f"{path}: {name}(**{short(kwargs)}) failed with {first_line(exc)}; check model.kwargs"
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
