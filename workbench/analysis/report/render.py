"""The HTML page from the collected dict: SVG charts built here, the page from a Jinja2 template (autoescaped)."""

from __future__ import annotations

import functools
import time
from html import escape
from typing import Any

from workbench.analysis.report.charts import Band, ScatterPoint, Series, bar_chart, line_chart, scatter_chart
from workbench.analysis.report.collect import METRICS, num
from workbench.core.diagnose import Verdict

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d1d1f}
main{max-width:980px;margin:0 auto;padding:24px 28px 48px;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:36px 0 8px;border-bottom:1px solid #e3e3e3;padding-bottom:4px}
h3{font-size:15px;margin:20px 0 6px}
.headline{font-size:28px;font-weight:700;color:#0b5394;margin:14px 0 4px}
.sub,.explain{color:#555;font-size:13px;margin:4px 0 10px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border-bottom:1px solid #eee;padding:5px 10px;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left} th{background:#fafafa}
.good{color:#1a7f37;font-weight:600} .bad{color:#b42318;font-weight:600}
.verdict{border-left:4px solid #0072B2;padding:6px 12px;margin:10px 0;background:#f4f8fc}
.verdict.loader-bound{border-color:#D55E00;background:#fdf4ee} .verdict.compute-bound{border-color:#009E73;background:#eefaf5}
.why{color:#8a5a00;background:#fff8e6;padding:6px 10px;font-size:13px}
pre{background:#f6f8fa;padding:10px;overflow:auto;font-size:12px;border:1px solid #eee}
figure{margin:10px 0} svg.chart{max-width:100%;height:auto;border:1px solid #eee}
.samples td{text-align:center} .samples img{image-rendering:pixelated;width:72px;height:72px}
footer{color:#888;font-size:12px;margin-top:36px}
"""


def _fmt(v: Any, kind: str = "") -> str:
    n = num(v)
    if n is None:
        return "\u2014" if v is None else escape(str(v))
    if kind == "pct":
        return f"{n * 100:.1f} %"
    if kind == "bytes":
        return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
    if kind == "ms":
        return f"{n:.3f}" if n < 10 else f"{n:.1f}"
    if kind in ("rate", "count"):
        return f"{n:,.0f}"
    return f"{n:,.3g}" if abs(n) < 1000 else f"{n:,.0f}"


def _change(key: str, kind: str, better: str, before: Any, after: Any) -> str:
    b, a = num(before), num(after)
    if b is None or a is None or (b == 0 and kind != "pct"):
        return ""
    if kind == "pct":
        d = (a - b) * 100
        cls = "good" if d > 0.05 else ("bad" if d < -0.05 else "")
        return f'<span class="{cls}">{"+" if d >= 0 else chr(0x2212)}{abs(d):.1f} pts</span>'
    if a == 0:
        return ""
    r = a / b
    improved = r < 1 if better == "lower" else r > 1
    cls = "good" if improved and abs(r - 1) > 0.02 else ("bad" if not improved and abs(r - 1) > 0.02 else "")
    if better == "lower":
        word = "faster" if kind == "ms" else "smaller"
        text = f"{1 / r:.2f}x {word}" if r <= 1 else f"{r:.2f}x {'slower' if kind == 'ms' else 'larger'}"
    else:
        text = f"{r:.2f}x"
    return f'<span class="{cls}">{text}</span>'


def _pareto_svg(data: dict[str, Any]) -> str:
    pts = data["pareto"]["points"]
    if not pts:
        return ""
    sp = [ScatterPoint(p["latency_ms_p50"], p["accuracy"] * 100, p["label"], highlight=p["on_front"],
                       group=f"run {p['run_id']}") for p in pts]
    front = [(p["latency_ms_p50"], p["accuracy"] * 100) for p in pts if p["on_front"]]
    return scatter_chart(sp, title="Accuracy against latency", x_label="median latency (ms), lower is better",
                         y_label="accuracy (%), higher is better", frontier=front)


def _sweep_charts(sw: dict[str, Any]) -> list[str]:
    charts: list[str] = []
    inf = sw.get("inference") or []
    trn = sw.get("train") or []
    precs = list(dict.fromkeys(p["precision"] for p in inf + trn))
    sizes = sorted({p["batch_size"] for p in inf + trn})
    ticks = {float(b): str(b) for b in sizes}
    log_x = bool(sizes) and max(sizes) / max(1, min(sizes)) >= 8
    if inf:
        series = []
        for prec in precs:
            pts = [p for p in inf if p["precision"] == prec]
            series.append(Series(f"{prec} median", [(p["batch_size"], p["p50_ms"]) for p in pts]))
            series.append(Series(f"{prec} p95", [(p["batch_size"], p["p95_ms"]) for p in pts], dashed=True,
                                 color=series[-1].color))
        for i, s in enumerate(series):
            s.color = s.color or ["#0072B2", "#E69F00", "#009E73"][(i // 2) % 3]
        charts.append(line_chart(series, title="Inference latency by batch size", x_label="batch size",
                                 y_label="ms per batch", log_x=log_x, x_tick_labels=ticks))
    thr = [Series(f"inference {prec}", [(p["batch_size"], p["throughput"]) for p in inf if p["precision"] == prec])
           for prec in precs if any(p["precision"] == prec for p in inf)]
    thr += [Series(f"training {prec}", [(p["batch_size"], p["throughput"]) for p in trn if p["precision"] == prec],
                   dashed=True) for prec in precs if any(p["precision"] == prec for p in trn)]
    if thr:
        charts.append(line_chart(thr, title="Throughput by batch size", x_label="batch size",
                                 y_label="samples per second", log_x=log_x, x_tick_labels=ticks))
    if inf:
        budget = sw.get("budget") or {}
        key = budget.get("latency_key") or "p95_ms"
        best = budget.get("best")
        sp = [ScatterPoint(p[key], p["throughput"], f"{p['precision']} b{p['batch_size']}",
                           highlight=best is not None and p == best, group=p["precision"]) for p in inf]
        vline = (budget["budget_ms"], f"budget {budget['budget_ms']:g} ms") if budget.get("budget_ms") else None
        charts.append(scatter_chart(sp, title=f"Throughput against latency ({key.removesuffix('_ms')})",
                                    x_label=f"latency {key.removesuffix('_ms')} (ms per batch)",
                                    y_label="samples per second", vline=vline, log_x=True))
    ld = sw.get("loader") or {}
    lpts = ld.get("points") or []
    if lpts:
        cats = [p["label"] + (" (default)" if p.get("is_default") else "") for p in lpts]
        best_i = next((i for i, p in enumerate(lpts) if ld.get("best") and p["label"] == ld["best"]["label"]), None)
        charts.append(bar_chart(cats, [("loader alone", [p["loader_samples_per_s"] for p in lpts]),
                                       ("training steps", [p["train_samples_per_s"] for p in lpts])],
                                title="DataLoader settings: samples per second", y_label="samples per second",
                                highlight=best_i))
        charts.append(bar_chart(cats, [("waiting for data (%)", [100 * (p["data_wait_fraction"] or 0) for p in lpts])],
                                title="Share of each training step spent waiting for data", y_label="% of step",
                                value_fmt="{:.0f} %", highlight=best_i))
    return charts


def _search_svg(acc: dict[str, Any]) -> str:
    """Every finished trial: speed-up against accuracy change, the Pareto front joined, the winner ringed."""
    front = set(acc.get("pareto") or [])
    best = (acc.get("best") or {}).get("number")
    done = [t for t in acc.get("trials") or [] if t.get("state") == "complete" and t.get("speedup") is not None
            and t.get("drop_points") is not None]
    pts = [ScatterPoint(-t["drop_points"], t["speedup"], f"#{t['number']}", highlight=t["number"] == best,
                        group="Pareto front" if t["number"] in front else "other trials") for t in done]
    line = sorted((-t["drop_points"], t["speedup"]) for t in done if t["number"] in front)
    max_drop = (acc.get("settings") or {}).get("max_drop")
    vline = (-float(max_drop), f"budget −{float(max_drop):g} pts") if max_drop is not None else None
    return scatter_chart(pts, title=f"Search {acc['run_id']}: speed-up against accuracy change",
                         x_label="accuracy change on validation (points), right is better",
                         y_label="speed-up vs the reference (x)", frontier=line, vline=vline, include_zero=True)


def _early_exit_svg(ee: dict[str, Any]) -> str:
    """Validation accuracy against compute per sample over thresholds, the chosen one ringed."""
    val, full_macs = ee["validation"], (ee["eval"] or {}).get("full_macs") or 0
    curve = val.get("curve") or []
    if not curve or not full_macs:
        return ""
    pts = [ScatterPoint(100.0 * c["mean_macs"] / full_macs, 100.0 * c["accuracy"], f"t={c['threshold']:.2f}",
                        highlight=abs(c["threshold"] - (ee["threshold"] or -1)) < 1e-9, group="thresholds")
           for c in curve]
    chosen = [(100.0 * val["mean_macs"] / full_macs, 100.0 * val["accuracy"])]
    return scatter_chart(pts, title=f"Run {ee['run_id']}: early exits, accuracy against compute",
                         x_label="compute per sample (% of the full model)", y_label="validation accuracy (%)",
                         frontier=chosen)


def _verdict_items(data: dict[str, Any]) -> list[dict[str, Any]]:
    items = []
    for rid, v in data["verdicts"].items():
        verdict = Verdict.from_dict(v)
        items.append({"title": f"Run {rid}", "kind": verdict.kind, "message": verdict.message,
                      "suggestions": list(verdict.suggestions)})
    for sw in data["sweeps"]:
        for p in (sw.get("loader") or {}).get("points") or []:
            if p.get("is_default"):
                v = Verdict.from_dict(p["verdict"])
                items.append({"title": f"Sweep {sw['run_id']}, default loader ({p['label']})", "kind": v.kind,
                              "message": v.message, "suggestions": list(v.suggestions)})
    return items


def _telemetry_svgs(data: dict[str, Any]) -> list[str]:
    out = []
    for rid, tel in data["telemetry"].items():
        ser = tel["series"]
        if not ser:
            continue
        bands = [Band(s["start_s"], s["end_s"], s["stage"]) for s in _top_level(tel["stages"])]
        cpu = [Series(name, [tuple(p) for p in ser[key]], markers=False) for key, name in
               (("cpu_percent", "machine CPU %"), ("proc_cpu_percent", "this process CPU %")) if key in ser]
        gpu = [Series(f"GPU {k[3]} util %", [tuple(p) for p in ser[k]], markers=False)
               for k in ser if k.endswith("_util_percent")]
        if cpu or gpu:
            out.append(line_chart(cpu + gpu, title=f"Run {rid}: processor load over time", x_label="seconds",
                                  y_label="percent", bands=bands))
        mem = [Series(name, [(t, v / 2**30) for t, v in ser[key]], markers=False) for key, name in
               (("ram_used_bytes", "machine RAM used (GiB)"), ("proc_rss_bytes", "this process (GiB)")) if key in ser]
        mem += [Series(f"GPU {k[3]} memory (GiB)", [(t, v / 2**30) for t, v in ser[k]], markers=False)
                for k in ser if k.endswith("_mem_used_bytes")]
        if mem:
            out.append(line_chart(mem, title=f"Run {rid}: memory over time", x_label="seconds", y_label="GiB",
                                  bands=bands))
    return out


def _top_level(stages: list[dict[str, Any]], limit: int = 24) -> list[dict[str, Any]]:
    """Stages not nested inside another one (so bands do not overlap), at most ``limit``."""
    out: list[dict[str, Any]] = []
    for s in stages:
        if out and s["start_s"] >= out[-1]["start_s"] and s["end_s"] <= out[-1]["end_s"]:
            continue
        out.append(s)
    return out[:limit]


@functools.cache
def _jinja() -> Any:
    """The Jinja2 environment: templates from this package, autoescape on (optional keys read as empty)."""
    import jinja2
    from markupsafe import Markup

    env = jinja2.Environment(loader=jinja2.PackageLoader("workbench.analysis.report", "templates"),
                             autoescape=True, trim_blocks=True,
                             lstrip_blocks=True, keep_trailing_newline=True)
    env.filters["fmt"] = lambda v, kind="": Markup(_fmt(v, kind))  # _fmt escapes what it is given
    env.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
    env.globals["change"] = lambda *a: Markup(_change(*a))
    return env


def render_html(data: dict[str, Any]) -> str:
    """The report page from ``collect_report_data``'s dict (and nothing else), through report.html.j2."""
    from markupsafe import Markup

    envs = data["environments"]
    charts = {"pareto": Markup(_pareto_svg(data)),
              "sweeps": {sw["run_id"]: [Markup(c) for c in _sweep_charts(sw)] for sw in data["sweeps"]},
              "telemetry": [Markup(c) for c in _telemetry_svgs(data)],
              "early_exits": {e["run_id"]: Markup(_early_exit_svg(e)) for e in data.get("early_exits") or []},
              "searches": {a["run_id"]: Markup(_search_svg(a)) for a in data.get("searches") or []}}
    context = {
        "h": data.get("headline") or {},
        "names": ", ".join(f"#{r['run_id']} {r['name']}" for r in data["runs"]),
        "css": Markup(_CSS), "metrics": METRICS, "comparison": data["comparison"], "charts": charts,
        "sweeps": data["sweeps"], "verdicts": _verdict_items(data), "predictions": data["predictions"],
        "runs": data["runs"], "environments": {r: {k: str(v) for k, v in e.items()} for r, e in envs.items()},
        "env_keys": list(dict.fromkeys(k for e in envs.values() for k in e)), "recipes": data["recipes"],
        "early_exits": data.get("early_exits") or [], "layer_profiles": data.get("layer_profiles") or [],
        "searches": data.get("searches") or [],
        "workbench": data["workbench"], "generated_at": data["generated_at"],
    }
    return _jinja().get_template("report.html.j2").render(context)
