"""Per-layer profiles, per-layer diffs and "why isn't it faster?" verdicts (engine, no Qt).

``profile_module`` (torch.profiler, one range per leaf module) and ``profile_onnx``
(onnxruntime's session profiler) give a ``Profile``; ``diff_profiles`` matches two by layer;
``collect_verdicts`` says what holds a model back; ``sources`` resolves runs and files and stores
a run's profile for reports and the app.
"""

from __future__ import annotations

from workbench.analysis.profile.diff import DiffRow, ProfileDiff, diff_profiles, normalize_layer
from workbench.analysis.profile.model import LayerProfile, Profile
from workbench.analysis.profile.onnx_profile import profile_onnx
from workbench.analysis.profile.sources import (
    PROFILE_ARTIFACT,
    Target,
    is_run_ref,
    latest_profile,
    profile_target,
    resolve_target,
    run_id_of,
    run_target,
    save_profile,
)
from workbench.analysis.profile.torch_profile import profile_module
from workbench.analysis.profile.verdicts import Verdict, collect_verdicts

__all__ = ["PROFILE_ARTIFACT", "DiffRow", "LayerProfile", "Profile", "ProfileDiff", "Target", "Verdict",
           "collect_verdicts", "diff_profiles", "is_run_ref", "latest_profile", "normalize_layer", "profile_module",
           "profile_onnx", "profile_target", "resolve_target", "run_id_of", "run_target", "save_profile"]
