"""``workbench profile`` and ``workbench diff``: where a model spends its time, layer by layer, and why
an optimized model is not faster."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from workbench.cli.common import Command, non_negative_int, plain_console, positive_int


def _threads(requested: int) -> Any:
    """Choose intra-op threads (auto: one per free core) and apply them to torch in this CLI process."""
    import torch

    from workbench.core.measure.paired import choose_threads

    choice = choose_threads(requested)
    torch.set_num_threads(choice.threads)
    return choice


def _fmt_macs(v: int | None) -> str:
    if v is None:
        return ""
    return f"{v / 1e6:,.2f} M" if v >= 1e4 else str(v)


def _print_verdicts(verdicts: list[Any]) -> None:
    console = plain_console()
    if not verdicts:
        console.print("verdicts: nothing stands out (no float layers left, no unfused Q/DQ, no memory-bound "
                      "hot layers, CPU features and threads fit)")
    for v in verdicts:
        console.print(f"why: {v.message}", style="yellow")
        console.print(f"  try: {v.advice}", style="dim")


def cmd_profile(args: argparse.Namespace) -> int:
    from workbench.analysis.profile import (
        collect_verdicts,
        diff_profiles,
        is_run_ref,
        profile_target,
        resolve_target,
        run_id_of,
        save_profile,
    )
    from workbench.core.store import RunStore

    run_ref = is_run_ref(args.target)
    store = RunStore() if run_ref else None
    target = resolve_target(args.target, store, input_shape=args.shape)
    choice = _threads(args.threads)
    profile = profile_target(target, args.batch, threads=choice.threads, quiet=True)
    verdicts = collect_verdicts(profile, cores=choice.cores, others_cores=choice.others_cores)
    diff = None
    stored = None
    if run_ref and store is not None:
        run_id = run_id_of(args.target)
        try:
            baseline = profile_target(resolve_target(args.target, store, side="baseline"), args.batch,
                                      threads=choice.threads, quiet=True)
            diff = diff_profiles(baseline, profile).to_dict()
        except Exception as exc:  # the profile itself is still worth keeping
            profile.notes.append(f"no baseline diff: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        stored = save_profile(store, run_id, profile, verdicts, diff)
    if args.json:
        print(json.dumps({"profile": profile.to_dict(), "verdicts": [v.to_dict() for v in verdicts],
                          "diff": diff, "stored": str(stored) if stored else None}, default=str))
        return 0
    from rich.table import Table

    table = Table(title=f"{profile.source}: {profile.runtime}, batch {profile.batch}, {profile.total_ms:.3f} ms per "
                  f"call ({profile.iters} calls, {profile.threads} thread(s))")
    for col, just in (("Layer", "left"), ("Op", "left"), ("Precision", "left"), ("ms", "right"),
                      ("Share", "right"), ("MACs", "right"), ("Output", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in profile.top(args.top):
        table.add_row(r.layer if r.layer == r.name else f"{r.layer} ({r.name})", r.op, r.precision,
                      f"{r.time_ms:.3f}", f"{r.share:.1%}", _fmt_macs(r.macs),
                      str(r.output_shape) if r.output_shape is not None else "")
    console = plain_console()
    console.print(table)
    if diff is not None:
        console.print(f"vs baseline: {diff['before_total_ms']:.3f} ms -> {diff['after_total_ms']:.3f} ms "
                      f"({', '.join(f'{n} {k}' for k, n in diff['counts'].items())})")
    _print_verdicts(verdicts)
    if stored is not None:
        console.print(f"stored with run {run_id_of(args.target)}: {stored}", style="dim")
    for note in profile.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    from workbench.analysis.profile import (
        collect_verdicts,
        diff_profiles,
        is_run_ref,
        profile_target,
        resolve_target,
    )
    from workbench.core.store import RunStore

    store = RunStore() if is_run_ref(args.a) or is_run_ref(args.b) else None
    before_t = resolve_target(args.a, store, input_shape=args.shape)
    after_t = resolve_target(args.b, store, input_shape=args.shape)
    choice = _threads(args.threads)
    before = profile_target(before_t, args.batch, threads=choice.threads, quiet=True)
    after = profile_target(after_t, args.batch, threads=choice.threads, quiet=True)
    diff = diff_profiles(before, after)
    verdicts = collect_verdicts(after, cores=choice.cores, others_cores=choice.others_cores)
    if args.json:
        print(json.dumps({"diff": diff.to_dict(), "verdicts": [v.to_dict() for v in verdicts],
                          "before": before.to_dict(), "after": after.to_dict()}, default=str))
        return 0
    from rich.table import Table

    speed = f"{diff.speedup:.2f}x" if diff.speedup else "n/a"
    table = Table(title=f"{before.source} ({before.runtime}) -> {after.source} ({after.runtime}), batch {args.batch}: "
                  f"{diff.before_total_ms:.3f} -> {diff.after_total_ms:.3f} ms ({speed})")
    for col, just in (("Layer", "left"), ("Status", "left"), ("Before ms", "right"), ("After ms", "right"),
                      ("Speedup", "right"), ("Precision", "left"), ("MACs before", "right"),
                      ("MACs after", "right"), ("Ops", "left")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in diff.rows:
        status = f"fused into {r.fused_into}" if r.status == "fused" and r.fused_into else r.status
        table.add_row(r.layer, status, "" if r.before_ms is None else f"{r.before_ms:.3f}",
                      "" if r.after_ms is None else f"{r.after_ms:.3f}",
                      f"{r.speedup:.2f}x" if r.speedup else "",
                      f"{r.before_precision or '-'} -> {r.after_precision or '-'}", _fmt_macs(r.before_macs),
                      _fmt_macs(r.after_macs), f"{r.before_op or '-'} -> {r.after_op or '-'}")
    plain_console().print(table)
    _print_verdicts(verdicts)
    for note in before.notes + after.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--batch", type=positive_int, default=1, help="batch size to profile at (default 1)")
    p.add_argument("--shape", default="", help="input shape without batch, e.g. 3,32,32 (for symbolic dims)")
    p.add_argument("--threads", type=non_negative_int, default=0,
                   help="intra-op threads (0 = auto: one per core other processes leave free)")
    p.add_argument("--json", action="store_true")


def _configure_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("target", help="a run (run:ID or ID; its deployed model) or an ONNX file")
    p.add_argument("--top", type=positive_int, default=15, help="rows to show, slowest first (default 15)")
    _common(p)


def _configure_diff(p: argparse.ArgumentParser) -> None:
    p.add_argument("a", help="before: a run (run:ID or ID) or an ONNX file")
    p.add_argument("b", help="after: a run (run:ID or ID) or an ONNX file")
    _common(p)


COMMANDS = [
    Command("profile", "per-layer time, MACs and precision of a run's model or an ONNX file, with verdicts",
            _configure_profile, cmd_profile),
    Command("diff", "per-layer diff of two runs or ONNX files: what got faster, fused, stayed float, and why",
            _configure_diff, cmd_diff),
]
