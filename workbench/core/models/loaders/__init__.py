"""Load a model from any supported source, load/save weights, and check a model fits the data.

Every user mistake (missing file, folder, corrupt or truncated file, wrong kind of file, unsafe
content, class not found, constructor error, shape mismatch) becomes a one-line
``ModelLoadError`` naming the file and saying what would work; no raw traceback escapes.

Model file policy (this package is the ONE place that opens model files; every path that reads
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

from workbench.core.models.loaders.archives import (
    EXPORT_HINT,
    TORCHSCRIPT_HINT,
    exported_module,
    load_export,
    load_export_archive,
    load_torchscript,
    load_torchscript_file,
)
from workbench.core.models.loaders.common import (
    KINDS,
    WEIGHT_SUFFIXES,
    LoadedModel,
    check_model_path,
    first_line,
)
from workbench.core.models.loaders.compat import check_model_data_compat
from workbench.core.models.loaders.onnx_files import (
    ONNX_HINT,
    checked_onnx,
    load_onnx,
    onnx_external_files,
    onnx_file_size,
    onnx_input_name,
    read_onnx,
)
from workbench.core.models.loaders.python_file import load_python, model_callables
from workbench.core.models.loaders.weights import WEIGHTS_HINT, load_weights, read_state_dict, save_weights
from workbench.core.models.zoo import build_zoo_model
from workbench.errors import ModelLoadError
from workbench.recipe import ModelSection

__all__ = [
    "EXPORT_HINT", "KINDS", "ONNX_HINT", "TORCHSCRIPT_HINT", "WEIGHTS_HINT", "WEIGHT_SUFFIXES", "LoadedModel",
    "check_model_data_compat", "check_model_path", "checked_onnx", "exported_module", "first_line",
    "load_export_archive", "load_model", "load_torchscript_file", "load_weights", "model_callables",
    "onnx_external_files", "onnx_file_size", "onnx_input_name", "read_onnx", "read_state_dict", "save_weights",
]


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
        loaded = load_python(section, num_classes, input_shape)
    elif kind == "torchscript":
        loaded = load_torchscript(section.path, num_classes, input_shape)
    elif kind == "export":
        loaded = load_export(section.path, num_classes, input_shape)
    elif kind == "onnx":
        loaded = load_onnx(section.path, num_classes, input_shape)
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
