"""Sample predictions: the same eval images through each run's rebuilt model, or why that is impossible."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from workbench.core.events import CancelToken
from workbench.errors import WorkbenchError

PREDICTION_SAMPLES = 8


def _png_data_uri(img: Any, scale: int = 3) -> str:
    from PIL import Image

    im = Image.fromarray(img)
    if scale > 1 and max(im.size) < 96:
        im = im.resize((im.width * scale, im.height * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _pick_indices(targets: Any, num_classes: int, n: int) -> list[int]:
    """Deterministic eval samples spread over classes (the same pick as the GUI's thumbnails)."""
    from workbench.core.data.datasets import balanced_indices

    return balanced_indices(targets, num_classes, n)


def sample_predictions(store: Any, runs: Sequence[Any], cancel: CancelToken) -> dict[str, Any]:
    """Predictions of each run's saved model on the same few eval images, side by side."""
    import numpy as np
    import torch

    from workbench.core.data import load_dataset
    from workbench.core.data.datasets import to_hwc_uint8
    from workbench.core.models import load_model, load_weights
    from workbench.recipe import loads_recipe

    candidates = [r for r in runs if r.kind != "sweep"]
    if not candidates:
        return {"available": False, "reason": "no training runs in this report (sweeps keep no trained model)"}
    status: dict[str, str] = {}
    ref = None  # (run, recipe, bundle)
    models: dict[int, Any] = {}
    for r in candidates:
        cancel.raise_if_cancelled()
        try:
            recipe = loads_recipe(r.recipe, f"run {r.id}")
        except WorkbenchError as exc:
            status[str(r.id)] = f"its recipe no longer validates ({exc})"
            continue
        if ref is not None and recipe.data != ref[1].data:
            status[str(r.id)] = f"it used different data than run {ref[0].id}, so its predictions are not comparable"
            continue
        arts = store.artifacts(r.id, "weights")
        if not arts:
            status[str(r.id)] = ("it saved no weights (only runs that finish with a PyTorch model do; "
                                 f"status: {r.status})")
            continue
        if not arts[-1].path.exists():
            status[str(r.id)] = f"its weights file {arts[-1].path} no longer exists"
            continue
        try:
            bundle = ref[2] if ref is not None else load_dataset(recipe.data)
        except WorkbenchError as exc:
            status[str(r.id)] = f"its data cannot be loaded now ({exc})"
            continue
        if bundle.kind != "image":
            status[str(r.id)] = f"its data is {bundle.kind}, not images"
            continue
        try:
            loaded = load_model(recipe.model.model_copy(update={"weights": ""}), bundle.num_classes,
                                tuple(bundle.input_shape))
            if loaded.module is None:
                raise WorkbenchError("an ONNX model (no PyTorch weights to load)")
            load_weights(loaded.module, arts[-1].path)
        except WorkbenchError as exc:
            status[str(r.id)] = (f"its model could not be rebuilt from the recipe and saved weights ({exc}); "
                                 "structured pruning, for one, changes layer shapes the recipe does not record")
            continue
        if ref is None:
            ref = (r, recipe, bundle)
        models[r.id] = loaded.module.eval()
        status[str(r.id)] = "ok"
    if ref is None:
        return {"available": False, "reason": "; ".join(f"run {k}: {v}" for k, v in status.items()),
                "status": status}
    bundle = ref[2]
    ds = bundle.eval
    idx = _pick_indices(getattr(ds, "targets", []), bundle.num_classes, PREDICTION_SAMPLES)
    xs = torch.stack([ds[i][0] for i in idx])
    preds: dict[int, list[int]] = {}
    confs: dict[int, list[float]] = {}
    with torch.inference_mode():
        for rid, m in models.items():
            probs = torch.softmax(m(xs).float(), dim=1)
            c, p = probs.max(dim=1)
            preds[rid], confs[rid] = p.tolist(), c.tolist()
    samples = []
    targets = np.asarray(ds.targets)
    for k, i in enumerate(idx):
        raw = ds.raw_image(i) if hasattr(ds, "raw_image") else None
        img = to_hwc_uint8(raw) if raw is not None else None
        true = int(targets[i])
        samples.append({"index": i, "true": bundle.class_names[true],
                        "image": _png_data_uri(img) if img is not None else None,
                        "predictions": {str(rid): {"label": bundle.class_names[preds[rid][k]],
                                                   "correct": preds[rid][k] == true,
                                                   "confidence": confs[rid][k]} for rid in models}})
    return {"available": True, "reference_run": ref[0].id, "runs": [str(r) for r in models], "status": status,
            "samples": samples, "note": "Each model is the run's saved PyTorch weights (the model at the end of "
            "the run); an exported ONNX/INT8 file is not re-run here"}
