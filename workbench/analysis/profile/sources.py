"""What to profile: a model file, or a stored run's deployed model (or its baseline), and storing results.

A run's *final* model is the one it deploys: its quantized ONNX artifact if it has one, else its
saved weights rebuilt through its recipe (pruned layers resized to the saved shapes). A run's
*baseline* is the recipe's model as configured before any technique ran (its ``model.weights``
if set); per-layer time does not depend on the weight values of a dense model, so an untrained
baseline profiles like the trained one. Every file is opened through ``core.models.loaders``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from workbench.analysis.profile.model import Profile
from workbench.core.store import RunRecord, RunStore
from workbench.errors import ModelLoadError, WorkbenchError

__all__ = ["PROFILE_ARTIFACT", "Target", "is_run_ref", "latest_profile", "profile_target", "resolve_target",
           "run_id_of", "run_target", "save_profile"]

#: The artifact kind a stored profile has (a JSON file in the run's artifacts folder).
PROFILE_ARTIFACT = "profile"


@dataclass
class Target:
    """A model ready to profile: a torch module or an ONNX file, with its per-sample input shape."""

    label: str
    input_shape: tuple[int, ...] | None = None
    module: nn.Module | None = None
    onnx_path: Path | None = None
    run_id: int | None = None
    notes: list[str] = field(default_factory=list)


def is_run_ref(ref: str) -> bool:
    """``run:12`` or a bare ``12`` that is not a file here."""
    ref = ref.strip()
    return ref.startswith("run:") or (ref.isdigit() and not Path(ref).exists())


def run_id_of(ref: str) -> int:
    raw = ref.strip().removeprefix("run:")
    if not raw.isdigit():
        raise WorkbenchError(f"{ref!r}: a run reference is run:ID or ID with a numeric ID (see `workbench runs`)")
    return int(raw)


def _run(store: RunStore, run_id: int) -> RunRecord:
    run = store.get_run(run_id)
    if run is None:
        raise WorkbenchError(f"run {run_id}: no such run in the store (see `workbench runs`)")
    return run


def _build_module(run: RunRecord, store: RunStore, weights: Path | str | None) -> Target:
    from workbench.core.models import load_model
    from workbench.core.models.resize import load_pruned_weights
    from workbench.core.pipeline import weights_of_run
    from workbench.recipe import loads_recipe

    data = run.summary.get("data") or {}
    if not data.get("input_shape") or not data.get("num_classes"):
        raise WorkbenchError(f"run {run.id} ({run.status}) recorded no data shape; it stopped before loading its "
                             "model, so there is nothing to profile")
    shape = tuple(int(d) for d in data["input_shape"])
    recipe = loads_recipe(run.recipe, f"run {run.id}")
    loaded = load_model(recipe.model.model_copy(update={"weights": ""}), int(data["num_classes"]), shape)
    if loaded.module is None:
        if loaded.onnx_path is None:
            raise ModelLoadError(f"run {run.id}: its model could not be rebuilt")
        return Target(f"run {run.id} model", shape, onnx_path=Path(loaded.onnx_path), run_id=run.id)
    if weights:
        ref = str(weights)
        path = weights_of_run(store, ref) if ref.startswith("run:") else Path(ref)
        load_pruned_weights(loaded.module, path, shape)
    return Target(f"run {run.id}", shape, module=loaded.module.eval(), run_id=run.id)


def run_target(store: RunStore, run_id: int, side: str = "final") -> Target:
    """The model a run deploys (``side="final"``) or the model it started from (``"baseline"``)."""
    run = _run(store, run_id)
    if side == "baseline":
        from workbench.recipe import loads_recipe

        weights = loads_recipe(run.recipe, f"run {run.id}").model.weights.strip() or None
        target = _build_module(run, store, weights)
        target.label = f"run {run.id} baseline"
        return target
    onnx = [a for a in store.artifacts(run_id, "onnx") if a.path.is_file()]
    if onnx:
        art = next((a for a in reversed(onnx) if a.meta.get("method")), onnx[-1])
        shape = tuple((run.summary.get("data") or {}).get("input_shape") or ()) or None
        method = art.meta.get("method")
        return Target(f"run {run.id} final ({method} ONNX)" if method else f"run {run.id} final (ONNX)", shape,
                      onnx_path=art.path, run_id=run.id)
    weights = [a for a in store.artifacts(run_id, "weights") if a.path.is_file()]
    if weights:
        target = _build_module(run, store, weights[-1].path)
        target.label = f"run {run.id} final"
        if any(s.get("runtime") == "torch dynamic int8" for s in
               [(st.get("after") or {}) for st in run.summary.get("stages") or []]):
            target.notes.append("the run's INT8 torch module lives only in that run; profiled its float weights")
        return target
    from workbench.recipe import loads_recipe

    if loads_recipe(run.recipe, f"run {run.id}").model.source == "onnx":
        target = _build_module(run, store, None)
        target.label = f"run {run.id} final"
        return target
    raise WorkbenchError(f"run {run.id} ({run.status}) saved no model (no ONNX or weights artifact); only runs "
                         "that completed have one")


def resolve_target(ref: str, store: RunStore | None = None, side: str = "final",
                   input_shape: str | None = None) -> Target:
    """A run reference (``run:ID``/``ID``) or a model file path, ready to profile."""
    if is_run_ref(ref):
        return run_target(store or RunStore(), run_id_of(ref), side)
    from workbench.core.models.loaders import check_model_path

    path = check_model_path(ref, "model file", "give a run ID (run:ID) or an ONNX file")
    if path.suffix.lower() != ".onnx":
        raise WorkbenchError(f"{path}: per-layer profiles of files need ONNX (.onnx); torch.export and TorchScript "
                             "files do not keep module boundaries. Profile the run instead, or export to ONNX")
    from workbench.core.measure.model_file import parse_shape

    return Target(str(path), parse_shape(input_shape), onnx_path=path)


def profile_target(target: Target, batch: int = 1, *, threads: int = 0, iters: int = 0,
                   min_time_s: float = 0.3, quiet: bool = False) -> Profile:
    """Profile a resolved target at ``batch`` (``threads`` = intra-op threads for onnxruntime;
    ``quiet`` hides torch.profiler's native log lines, for the CLI)."""
    from workbench.analysis.profile.onnx_profile import profile_onnx
    from workbench.analysis.profile.torch_profile import profile_module

    if target.onnx_path is not None:
        profile = profile_onnx(target.onnx_path, batch, input_shape=target.input_shape, threads=threads,
                               iters=iters, min_time_s=min_time_s)
    else:
        assert target.module is not None and target.input_shape is not None
        profile = profile_module(target.module, target.input_shape, batch, iters=iters, min_time_s=min_time_s,
                                 quiet=quiet)
    profile.source = target.label
    profile.notes.extend(target.notes)
    return profile


def save_profile(store: RunStore, run_id: int, profile: Profile, verdicts: list[Any],
                 diff: dict[str, Any] | None = None) -> Path:
    """Write the profile (and its verdicts) as the run's ``profile`` artifact, for reports and the app."""
    from workbench.core.paths import artifacts_dir

    path = artifacts_dir(run_id) / f"profile-b{profile.batch}.json"
    payload = {"profile": profile.to_dict(), "verdicts": [v.to_dict() for v in verdicts], "diff": diff}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, default=str), encoding="utf-8")
    os.replace(tmp, path)
    store.add_artifact(run_id, PROFILE_ARTIFACT, path, {"batch": profile.batch, "total_ms": profile.total_ms})
    return path


def latest_profile(store: RunStore, run_id: int) -> dict[str, Any] | None:
    """The last stored profile of a run as ``{"profile", "verdicts", "diff"}``; None if there is none."""
    for art in reversed(store.artifacts(run_id, PROFILE_ARTIFACT)):
        try:
            data = json.loads(art.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and isinstance(data.get("profile"), dict):
            return data
    return None
