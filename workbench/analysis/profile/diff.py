"""Match two profiles layer by layer: what got faster, slower, fused away, removed or added.

Pure functions over ``Profile`` objects. Layers match by their ``layer`` key (the PyTorch module
path; ONNX rows carry the module they came from), so a torch baseline and its INT8 ONNX export
line up. Several ONNX nodes of one layer (a QLinearConv and the DequantizeLinear after it) are
summed into that layer's row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from workbench.analysis.profile.model import COMPUTE_OPS, OTHER, QDQ_OPS, LayerProfile, Profile

__all__ = ["FUSABLE_TYPES", "DiffRow", "ProfileDiff", "diff_profiles", "normalize_layer"]

#: Layers that optimizers fold into the layer before them (BatchNorm into Conv, activations into
#: Conv/Gemm kernels).
FUSABLE_TYPES = frozenset({
    "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "ReLU", "ReLU6", "GELU", "SiLU", "Sigmoid", "Tanh", "Hardswish",
    "LeakyReLU", "Relu", "BatchNormalization", "Clip", "HardSwish",
})
#: A layer counts as faster/slower when its time changed by more than this fraction.
SAME_WITHIN = 0.10


def normalize_layer(name: str) -> str:
    """The key layers are matched on: no ``_orig_mod.``/``module.`` wrappers (compile, DDP, DataParallel)."""
    for prefix in ("_orig_mod.", "module."):
        while name.startswith(prefix):
            name = name[len(prefix):]
    return name


@dataclass
class _Group:
    layer: str
    time_ms: float = 0.0
    macs: int | None = None
    precision: str = ""
    ops: list[str] = field(default_factory=list)
    executed: bool = True
    order: int = 0


def _groups(profile: Profile) -> dict[str, _Group]:
    groups: dict[str, _Group] = {}
    for i, row in enumerate(profile.layers):
        key = normalize_layer(row.layer)
        g = groups.setdefault(key, _Group(key, order=i))
        g.time_ms += row.time_ms
        if row.macs is not None:
            g.macs = (g.macs or 0) + row.macs
        g.ops.append(row.op)
        g.executed = g.executed and row.executed
    for key, g in groups.items():
        rows = [r for r in profile.layers if normalize_layer(r.layer) == key]
        # a layer computes in its compute ops' precision; Q/DQ and the float rescale after ConvInteger do not count
        main = [r for r in rows if r.op in COMPUTE_OPS] or [r for r in rows if r.op not in QDQ_OPS] or rows
        for r in main:
            g.precision = _merge_precision(g.precision, r.precision)
    return groups


def _fold_containers(groups: dict[str, _Group], other_side: set[str]) -> dict[str, _Group]:
    """Fold rows of a container module (``blocks.0``: residual adds, functional GELU in its forward) into
    "(other)" when the other profile only has its leaves: torch times such ops outside every leaf."""
    out: dict[str, _Group] = {}
    for key, g in groups.items():
        parent = next((o for o in sorted(other_side, key=len, reverse=True) if key.startswith(o + ".")), None)
        if key not in other_side and parent is not None and parent != OTHER:
            # a child the other side times as part of one module (MultiheadAttention's out_proj)
            into = out.setdefault(parent, _Group(parent, order=g.order))
            into.time_ms += g.time_ms
            into.macs = None if into.macs is None and g.macs is None else (into.macs or 0) + (g.macs or 0)
            into.ops += g.ops
            into.precision = _merge_precision(into.precision, g.precision)
            continue
        if key not in other_side and key != OTHER and any(o.startswith(key + ".") for o in other_side):
            into = out.setdefault(OTHER, _Group(OTHER, order=g.order))
            into.time_ms += g.time_ms
            into.ops += g.ops
            into.precision = _merge_precision(into.precision, g.precision)
            continue
        if key in out:  # met after rows already folded into it
            out[key].time_ms += g.time_ms
            out[key].ops += g.ops
            out[key].order = min(out[key].order, g.order)
            if g.macs is not None:
                out[key].macs = (out[key].macs or 0) + g.macs
            out[key].precision = _merge_precision(g.precision, out[key].precision)
        else:
            out[key] = g
    return out


def _merge_precision(a: str, b: str) -> str:
    """Precision of a layer made of several nodes: shape ops ("other") do not count."""
    if not a or a == b or a == "other":
        return b
    return a if b == "other" else "mixed"


@dataclass
class DiffRow:
    """One layer before and after; ``status`` is same/faster/slower/removed/added/fused/not executed."""

    layer: str
    status: str
    before_ms: float | None
    after_ms: float | None
    before_macs: int | None = None
    after_macs: int | None = None
    before_precision: str = ""
    after_precision: str = ""
    before_op: str = ""
    after_op: str = ""
    fused_into: str = ""

    @property
    def speedup(self) -> float | None:
        if self.before_ms and self.after_ms:
            return self.before_ms / self.after_ms
        return None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": self.speedup}


@dataclass
class ProfileDiff:
    before: str
    after: str
    before_total_ms: float
    after_total_ms: float
    batch: int
    rows: list[DiffRow]

    @property
    def speedup(self) -> float | None:
        return self.before_total_ms / self.after_total_ms if self.after_total_ms else None

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.status] = out.get(r.status, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"before": self.before, "after": self.after, "before_total_ms": self.before_total_ms,
                "after_total_ms": self.after_total_ms, "batch": self.batch, "speedup": self.speedup,
                "counts": self.counts(), "rows": [r.to_dict() for r in self.rows]}


def _status(before_ms: float, after_ms: float, tolerance: float) -> str:
    if after_ms < before_ms * (1 - tolerance):
        return "faster"
    if after_ms > before_ms * (1 + tolerance):
        return "slower"
    return "same"


def _op_label(ops: list[str]) -> str:
    return "+".join(dict.fromkeys(ops))


def diff_profiles(before: Profile, after: Profile, tolerance: float = SAME_WITHIN) -> ProfileDiff:
    """Per-layer before/after rows, in the before model's order, then the layers only ``after`` has."""
    b_groups, a_groups = _groups(before), _groups(after)
    a_groups = _fold_containers(a_groups, set(b_groups))
    b_groups = _fold_containers(b_groups, set(a_groups))
    b_types = {normalize_layer(r.layer): r.op for r in before.layers}
    fused_into: dict[str, str] = {}
    for row in after.layers:
        for f in row.fused:
            fused_into.setdefault(normalize_layer(f), normalize_layer(row.layer))
    a_not_run = {normalize_layer(n) for n in after.not_executed}
    rows: list[DiffRow] = []
    previous_matched = ""
    for key, g in sorted(b_groups.items(), key=lambda kv: kv[1].order):
        a = a_groups.get(key)
        common = {"before_ms": g.time_ms, "before_macs": g.macs, "before_precision": g.precision,
                  "before_op": _op_label(g.ops)}
        if not g.executed:
            rows.append(DiffRow(key, "not executed", **{**common, "before_ms": None}, after_ms=None))
            continue
        if a is not None:
            status = _status(g.time_ms, a.time_ms, tolerance) if a.executed else "not executed"
            rows.append(DiffRow(key, status, after_ms=a.time_ms if a.executed else None, after_macs=a.macs,
                                after_precision=a.precision, after_op=_op_label(a.ops), **common))
            previous_matched = key
        elif key in fused_into:
            rows.append(DiffRow(key, "fused", after_ms=None, fused_into=fused_into[key], **common))
        elif key in a_not_run:
            rows.append(DiffRow(key, "not executed", after_ms=None, **common))
        elif b_types.get(key) in FUSABLE_TYPES and previous_matched and after.kind == "onnx":
            # an activation/BN the exporter or quantizer merged into the layer before it
            rows.append(DiffRow(key, "fused", after_ms=None, fused_into=previous_matched, **common))
        else:
            rows.append(DiffRow(key, "removed", after_ms=None, **common))
    for key in dict.fromkeys(normalize_layer(n) for n in before.not_executed):
        if key not in b_groups:  # an unused module, or a node the optimizer folded away before
            rows.append(DiffRow(key, "not executed", before_ms=None, after_ms=None))
    for key, a in sorted(a_groups.items(), key=lambda kv: kv[1].order):
        if key not in b_groups:
            rows.append(DiffRow(key, "added", before_ms=None, after_ms=a.time_ms, after_macs=a.macs,
                                after_precision=a.precision, after_op=_op_label(a.ops)))
    return ProfileDiff(before.source, after.source, before.total_ms, after.total_ms, after.batch, rows)


def layer_rows(profile: Profile) -> list[LayerProfile]:
    """The profile's rows, slowest first (for tables and reports)."""
    return sorted(profile.layers, key=lambda r: r.time_ms, reverse=True)
