"""``workbench quantize``: INT8 or fp16 for any ONNX file, with a parity check against the float model."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from workbench.cli.common import Command, fail, non_negative_int, positive_float, positive_int, unit_float
from workbench.errors import WorkbenchError, short


def _configure_quantize(p: argparse.ArgumentParser) -> None:
    from workbench.cli.common import int_list

    p.description = ("Quantize an ONNX model with onnxruntime (dynamic, static QDQ, or fp16): image models with one "
                     "input, or token models with several named inputs (input_ids, attention_mask, ...)")
    p.add_argument("model", help="an .onnx file")
    p.add_argument("--method", default="dynamic", choices=["dynamic", "static", "fp16"])
    p.add_argument("--out", default="", help="output .onnx (default: MODEL.<method>.onnx next to the input)")
    p.add_argument("--calib", default="", metavar="DATA",
                   help="calibration data for static: .npy of model inputs, .npz/.csv, or an image folder; token "
                        "models: an .npz of named arrays (input_ids, attention_mask, ...)")
    p.add_argument("--samples", type=positive_int, default=256, help="calibration samples (static)")
    p.add_argument("--calibration", default="minmax", choices=["minmax", "entropy", "percentile"])
    p.add_argument("--no-per-channel", action="store_true", help="per-tensor weight scales")
    p.add_argument("--no-preprocess", action="store_true", help="skip quant_pre_process")
    p.add_argument("--exclude-nodes", default="", help="comma list of ONNX node names to keep in float")
    p.add_argument("--shape", default="", help="input shape without batch, for symbolic dims, e.g. 3,32,32")
    p.add_argument("--batch", type=positive_int, default=32, help="batch size for calibration and parity inputs")
    p.add_argument("--data", default="", help="labelled data (.npz/.csv/image folder): report accuracy before/after; "
                   "token models: an .npz of named token arrays (+ optional labels) for parity, and calibration "
                   "when --calib is not given")
    p.add_argument("--seq-len", type=positive_int, default=128,
                   help="size of symbolic sequence axes for synthesised token inputs (default 128)")
    p.add_argument("--min-cosine", type=unit_float, default=0.99,
                   help="token models: least per-sample cosine similarity of outputs vs the float model "
                        "(the file is still written; exit code 2 below it; default 0.99)")
    p.add_argument("--bench", action="store_true", help="also time float and quantized models, paired (interleaved "
                   "rounds in one process; ratios with 95 %% CI)")
    p.add_argument("--transformer-optimizer", action="store_true",
                   help="run onnxruntime's transformer graph optimizer (BERT-style fusions) before quantizing; "
                        "not a default: with --bench it is timed paired against the plain float model")
    p.add_argument("--batch-sizes", type=int_list, default=[1, 64], help="with --bench")
    p.add_argument("--max-time", type=positive_float, default=10.0, metavar="SECONDS",
                   help="with --bench: cap on the paired rounds per batch size (default 10)")
    p.add_argument("--threads", type=non_negative_int, default=0, help="onnxruntime threads (0 = all cores)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--json", action="store_true")


def _calibration_from(path: str, shape: tuple[int, ...], samples: int, batch: int) -> list[Any]:
    import numpy as np

    from workbench.core.measure.model_file import load_labelled_data
    from workbench.techniques.quantize.methods import calibration_batches

    p = Path(path).expanduser()
    if p.suffix.lower() == ".npy":
        from workbench.core.fileio import regular_file

        regular_file(p, "calibration file", "give a .npy array of model inputs, an .npz/.csv file or an image folder")
        try:
            x = np.load(p, allow_pickle=False)
        except ValueError as exc:
            if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
                raise WorkbenchError(f"{p}: refused: the array holds Python objects (dtype=object), which were not "
                                     "loaded because that could run code; save a numeric array with np.save") from None
            raise WorkbenchError(f"--calib {p}: cannot read .npy calibration inputs ({short(str(exc))})") from None
        except OSError as exc:
            raise WorkbenchError(f"--calib {p}: cannot read .npy calibration inputs ({short(str(exc))})") from None
        if x.dtype.kind not in "biuf" or x.ndim < 2:
            raise WorkbenchError(f"--calib {p}: calibration array has dtype {x.dtype} and shape {list(x.shape)}; "
                                 f"give numeric model inputs [N, {', '.join(map(str, shape))}]")
        if tuple(x.shape[1:]) != tuple(shape):
            raise WorkbenchError(f"{p}: calibration array has shape {list(x.shape)}; the model takes "
                                 f"[N, {', '.join(map(str, shape))}]")
        x = x[:samples].astype(np.float32)
        return [x[i:i + batch] for i in range(0, len(x), batch)]
    _, bundle = load_labelled_data(p, shape)
    return calibration_batches(bundle.train, bundle.eval, samples, batch)


def _token_batches(args: argparse.Namespace, mf: Any, batch: int,
                   notes: list[str]) -> tuple[list[Any], list[Any], tuple[Any, Any] | None]:
    """Calibration batches, parity batches and (feed, labels) for scoring, for a token model.

    Each batch is a dict of named arrays in the inputs' own dtypes (int64 ids stay int64).
    """
    from workbench.core.measure.feeds import feeds_batches, load_token_npz, slice_feed

    def split(feed: dict[str, Any], n: int) -> list[dict[str, Any]]:
        return [slice_feed(feed, i, i + batch) for i in range(0, n, batch)]

    data_feed = labels = None
    if args.data:
        data_feed, labels, data_notes = load_token_npz(args.data, mf.inputs, "--data")
        mf.check_length(next(iter(data_feed.values())).shape[-1], f"--data {args.data}: a sequence length of")
        notes += data_notes
    if args.calib:
        feed, _, calib_notes = load_token_npz(args.calib, mf.inputs, "--calib", max_samples=args.samples)
        mf.check_length(next(iter(feed.values())).shape[-1], f"--calib {args.calib}: a sequence length of")
        notes += calib_notes
        calib = split(feed, len(next(iter(feed.values()))))
    elif data_feed is not None:
        n = min(args.samples, len(next(iter(data_feed.values()))))
        calib = split(slice_feed(data_feed, 0, n), n)
    else:
        mf.check_length(mf.seq_len)
        calib = feeds_batches(mf.inputs, min(args.samples, 64), batch, mf.seq_len)
        notes.append(mf.describe_inputs())
        if args.method == "static":
            notes.append("calibrated on synthetic inputs: activation ranges are rough; pass --calib TOKENS.npz with "
                         "real token ids for usable accuracy")
    if data_feed is not None:
        parity_batches = split(slice_feed(data_feed, 0, 4 * batch), min(4 * batch, len(next(iter(data_feed.values())))))
    else:
        parity_batches = calib[:4]
    scoring = (data_feed, labels) if labels is not None else None
    return calib, parity_batches, scoring


def _paired_bench(files: list[tuple[str, Path]], mf: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Time the float model and its variants in interleaved rounds in one process, ratios against the first."""
    import numpy as np

    from workbench.core.measure.feeds import synthetic_feed
    from workbench.core.measure.paired import Contestant, choose_threads, time_paired
    from workbench.core.measure.runtimes import OrtRuntime

    threads = choose_threads(args.threads)
    runtimes = [OrtRuntime(path, threads=threads.threads) for _, path in files]
    sizes = [mf.fixed_batch] if mf.fixed_batch else list(args.batch_sizes)
    make = (lambda b: synthetic_feed(mf.inputs, b, mf.seq_len, seed=b)) if mf.token_model else None
    try:
        timing = time_paired([Contestant(label, label, rt) for (label, _), rt in zip(files, runtimes, strict=True)],
                             mf.input_shape, sizes, threads=threads, make_batch=make, max_time_s=args.max_time)
    finally:
        for rt in runtimes:
            rt.close()
    against = timing.against_first()
    batches: dict[str, dict[str, Any]] = {}
    for bt in timing.batches:
        row: dict[str, Any] = {}
        for i, (label, _) in enumerate(files):
            entry = {"ratio": 1.0, "ci95": [1.0, 1.0]} if i == 0 else against[label][str(bt.batch)]
            row[label] = {"p50_ms": float(np.median(bt.blocks_ms[i])), **entry}
        batches[str(bt.batch)] = row
    return {"paired": True, "reliable": timing.reliable, "reason": timing.reason, "threads": threads.to_dict(),
            "batches": batches}


def cmd_quantize(args: argparse.Namespace) -> int:
    from workbench.core.fileio import atomic_write_with, check_output_file
    from workbench.core.measure.model_file import (
        evaluate_feed,
        evaluate_file,
        load_labelled_data,
        open_model_file,
    )
    from workbench.core.measure.runtimes import OrtRuntime
    from workbench.core.models.loaders import onnx_file_size
    from workbench.core.onnx_export import ort_predict_fn, parity
    from workbench.techniques.quantize.methods import (
        cpu_has_vnni,
        optimize_transformer_onnx,
        quantize_onnx,
        synthetic_batches,
    )

    mf = open_model_file(args.model, args.shape, args.seq_len)  # safety checks + shapes (refuses bad external data)
    if mf.kind != "onnx":
        return fail(f"{args.model}: `workbench quantize` takes an .onnx file; export torch models with a recipe "
                    "([quantize] + [export]) or `workbench export`")
    out = Path(args.out).expanduser() if args.out else mf.path.with_name(f"{mf.path.stem}.{args.method}.onnx")
    if out.resolve() == mf.path.resolve():
        return fail(f"--out {out}: would overwrite the input model; choose another path")
    check_output_file(out, "--out", args.force)  # before any work: folder, parent a file, unwritable, exists
    notes: list[str] = []
    batch = mf.fixed_batch or args.batch
    token = mf.token_model
    scoring = None
    labelled = None
    if token:
        batches, parity_batches, scoring = _token_batches(args, mf, batch, notes)  # fails now, not later
    else:
        labelled = load_labelled_data(args.data, mf.input_shape)[0] if args.data else None  # fails now, not later
        if args.calib:
            batches = _calibration_from(args.calib, mf.input_shape, args.samples, batch)
        else:
            batches = synthetic_batches(mf.input_shape, min(args.samples, 64), batch)
            if args.method == "static":
                notes.append("calibrated on synthetic (random) inputs: activation ranges are rough; pass --calib DATA "
                             "with real inputs for usable accuracy")
        parity_batches = batches[:4]
    if mf.fixed_batch is not None:
        def rows(b: Any) -> int:
            return len(next(iter(b.values()))) if isinstance(b, dict) else len(b)

        batches = [b for b in batches if rows(b) == mf.fixed_batch] or batches[:1]
        parity_batches = [b for b in parity_batches if rows(b) == mf.fixed_batch] or batches[:1]
    exclude = [n.strip() for n in args.exclude_nodes.split(",") if n.strip()]
    # Everything (pre-processed intermediate, quantized file) is made in a private folder; only the
    # finished, verified model is moved to --out, so a failure leaves nothing behind.
    with tempfile.TemporaryDirectory(prefix="wb-quantize-") as work:
        source = mf.path
        if args.transformer_optimizer:
            source = Path(work) / f"{mf.path.stem}.optimized.onnx"
            fused = optimize_transformer_onnx(mf.path, source)
            what = ", ".join(fused) if fused else "nothing (no BERT-style pattern found)"
            notes.append(f"transformer optimizer: fused {what}; parity is against the original float model")
        staged = Path(work) / out.name
        result = quantize_onnx(source, staged, method=args.method, per_channel=not args.no_per_channel,
                               calibration=args.calibration, batches=batches, preprocess=not args.no_preprocess,
                               nodes_to_exclude=exclude)
        ref, cand = OrtRuntime(mf.path, threads=args.threads), OrtRuntime(staged, threads=args.threads)
        try:
            par = parity(ort_predict_fn(ref), ort_predict_fn(cand), parity_batches)
            report: dict[str, Any] = {
                "input": str(mf.path), "output": str(out), "method": args.method, "format": result.format,
                "input_shape": list(mf.input_shape), "preprocessed": result.preprocessed,
                "inputs": {s.name: s.dtype for s in mf.inputs},
                "transformer_optimizer": args.transformer_optimizer,
                "excluded_nodes": result.excluded_nodes,
                "size_bytes": {"float": onnx_file_size(mf.path), "quantized": onnx_file_size(staged)},
                "parity_vs_float": par.to_dict(), "cpu_vnni": cpu_has_vnni(), "notes": notes + result.notes,
            }
            if labelled is not None:
                report["accuracy"] = {"float": evaluate_file(ref, labelled),
                                      "quantized": evaluate_file(cand, labelled)}
            elif scoring is not None:
                report["accuracy"] = {"float": evaluate_feed(ref, *scoring), "quantized": evaluate_feed(cand, *scoring)}
        finally:
            ref.close()
            cand.close()
        if args.bench:
            files = [("float", mf.path)]
            if source != mf.path:
                files.append(("float, transformer-optimized", source))
            files.append((f"{args.method} quantized", staged))
            report["speedup"] = _paired_bench(files, mf, args)
        atomic_write_with(out, lambda tmp: shutil.copyfile(staged, tmp))
    below = token and par.cosine_min < args.min_cosine
    if token:
        report["min_cosine"] = args.min_cosine
        report["parity_ok"] = not below
    if args.json:
        print(json.dumps(report, default=str))
        return fail(f"{out}: cosine min {par.cosine_min:.4f} < --min-cosine {args.min_cosine:g}") if below else 0
    s = report["size_bytes"]
    if token:  # no labels: argmax agreement of hidden states or embeddings means nothing
        vs = (f"cosine similarity min {par.cosine_min:.4f}, mean {par.cosine_mean:.4f} over {par.samples} samples "
              f"(--min-cosine {args.min_cosine:g})")
    else:
        vs = f"max abs error {par.max_abs_err:.3g}, top-1 agreement {par.top1_agreement * 100:.1f} %"
    print(f"{args.method} -> {out} ({result.format}): {s['float'] / 1e6:.2f} MB -> {s['quantized'] / 1e6:.2f} MB; "
          f"vs float: {vs}")
    if "accuracy" in report:
        a = report["accuracy"]
        print(f"accuracy: float {a['float'] * 100:.2f} % -> quantized {a['quantized'] * 100:.2f} %")
    sp = report.get("speedup")
    if sp:
        for b, models in sp["batches"].items():
            print(f"paired, batch {b}: " + "; ".join(
                f"{label} {m['p50_ms']:.3f} ms" + ("" if i == 0 else
                                                   f" ({m['ratio']:.2f}x, 95 % CI {m['ci95'][0]:.2f}–{m['ci95'][1]:.2f})")
                for i, (label, m) in enumerate(models.items())))
        if not sp["reliable"]:
            print(f"note: paired timing unreliable: {sp['reason']}", file=sys.stderr)
    for n in report["notes"]:
        print(f"note: {n}", file=sys.stderr)
    if below:
        return fail(f"{out} written, but its outputs differ from the float model (cosine min {par.cosine_min:.4f} < --min-cosine "
                    f"{args.min_cosine:g}); keep sensitive nodes float with --exclude-nodes, calibrate on real tokens "
                    "(--calib), or try --method dynamic")
    return 0


COMMANDS = [Command("quantize", "quantize any ONNX file (dynamic/static INT8, fp16) and check parity", _configure_quantize,
                    cmd_quantize)]
