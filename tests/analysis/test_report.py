"""The HTML report (structure, numbers, self-containment) and the SVG chart generators."""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.helpers import tiny_recipe
from workbench.analysis.report import build_report, headline, write_report
from workbench.analysis.report.charts import (
    Band,
    ScatterPoint,
    Series,
    bar_chart,
    line_chart,
    nice_ticks,
    scatter_chart,
)
from workbench.core.store import RunStore
from workbench.techniques import run_recipe

CHROMIUM = Path("/usr/bin/chromium")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# --------------------------------------------------------------------------------------- charts


def test_charts_are_well_formed_svg_with_their_data() -> None:
    line = line_chart([Series("a", [(1, 2.0), (2, 3.0), (4, float("nan"))]), Series("b", [(1, 1.0), (8, 5.0)],
                                                                                       dashed=True)],
                      title="T <&>", x_label="x", y_label="y", log_x=True, bands=[Band(1, 2, "load")],
                      hline=(2.5, "budget"))
    scatter = scatter_chart([ScatterPoint(1, 0.9, "fast", highlight=True), ScatterPoint(2, 0.95, "slow")],
                            title="S", x_label="ms", y_label="acc", frontier=[(1, 0.9), (2, 0.95)], vline=(1.5, "b"))
    bars = bar_chart(["0 workers, no cache", "1 worker, cache"], [("alone", [100.0, None]), ("train", [50.0, 80.0])],
                     title="B", y_label="samples/s", highlight=1)
    for svg, kind, marks in ((line, "line", "path"), (scatter, "scatter", "circle"), (bars, "bar", "rect")):
        root = ET.fromstring(svg)
        assert root.tag == "svg" and root.get("data-chart") == kind
        assert root.find("title") is not None and root.findall(f".//{marks}")
        assert "http" not in svg
    assert "T &lt;&amp;&gt;" in line  # text is escaped
    assert len(ET.fromstring(line).findall(".//path[@class='series']")) == 2
    assert len(ET.fromstring(bars).findall(".//rect[@class='bar']")) == 3  # the None is a gap, not a zero bar
    assert ET.fromstring(line_chart([], title="e", x_label="", y_label="", standalone=True)) is not None
    assert "no data" in scatter_chart([ScatterPoint(float("inf"), 1)], title="e", x_label="", y_label="")


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    ticks = nice_ticks(0.13, 9.7)
    assert ticks[0] <= 0.13 and ticks[-1] >= 9.7 and len(ticks) <= 8
    steps = {round(b - a, 9) for a, b in zip(ticks, ticks[1:], strict=False)}
    assert len(steps) == 1 and steps.pop() in (1, 2, 2.5, 5)
    assert nice_ticks(3, 3)  # a flat range still gets ticks


def test_headline_numbers_and_wording() -> None:
    h = headline({"latency_ms_p50": 3.1, "accuracy": 0.912, "size_bytes": 4.2e6, "latency_batch": 1},
                 {"latency_ms_p50": 1.0, "accuracy": 0.908, "size_bytes": 1.0e6, "latency_batch": 1})
    assert h["text"] == "3.1x faster (batch 1), \u22120.4 points accuracy, 4.2x smaller"
    assert math.isclose(h["speedup"], 3.1) and math.isclose(h["accuracy_delta_points"], -0.4, abs_tol=1e-9)
    assert h["paired"] is False and "not interleaved" in h["caveat"]  # never a bare headline
    slower = headline({"latency_ms_p50": 1.0, "latency_batch": 8}, {"latency_ms_p50": 2.0, "latency_batch": 8})
    assert slower["text"] == "2.0x slower (batch 8)"
    assert headline({}, {})["text"] == "no comparable measurements"


def test_headline_refuses_ratios_across_batch_sizes() -> None:
    h = headline({"latency_ms_p50": 3.0, "latency_batch": 1, "throughput": 4034.0, "throughput_batch": 1},
                 {"latency_ms_p50": 30.0, "latency_batch": 64, "throughput": 116.0, "throughput_batch": 64})
    assert "speedup" not in h and "throughput_ratio" not in h
    assert h["note"] == "not comparable: latency measured at batch 1 vs 64"
    assert h["text"] == "no comparable measurements"


def test_headline_uses_the_paired_speedup_with_its_interval_split_and_caveat() -> None:
    speedup = {"paired": True, "reliable": False, "reason": "other processes used 1.20 CPU cores", "rounds": 10,
               "latency": {"1": {"ratio": 5.5, "ci95": [5.1, 5.9]}, "64": {"ratio": 4.0, "ci95": [3.9, 4.1]}},
               "steps": [{"name": "runtime switch", "detail": "torch eager fp32 → onnxruntime fp32", "ratio": 3.5},
                         {"name": "quantize", "detail": "onnxruntime fp32 → onnxruntime static INT8",
                          "ratio": 1.57}]}
    base = {"latency_ms_p50": 100.0, "latency_batch": 1, "accuracy": 0.9}  # a loaded, unpaired 100x
    final = {"latency_ms_p50": 1.0, "latency_batch": 1, "accuracy": 0.9}
    h = headline(base, final, speedup)
    assert h["speedup"] == 5.5 and h["speedup_ci95"] == [5.1, 5.9]
    assert h["text"].startswith("5.5x faster (95 % CI 5.1\u20135.9x, batch 1)")
    assert h["split"] == ("runtime switch (torch eager fp32 → onnxruntime fp32) 3.50x × "
                          "quantize (onnxruntime fp32 → onnxruntime static INT8) 1.57x")
    assert h["caveat"] == "Unreliable measurement: other processes used 1.20 CPU cores"


def test_report_of_a_paired_run_shows_split_and_caveat_beside_the_headline(tmp_path: Path) -> None:
    speedup = {"paired": True, "reliable": False, "reason": "other processes used 1.20 CPU cores", "rounds": 10,
               "latency": {"1": {"ratio": 5.5, "ci95": [5.1, 5.9], "baseline_ms": 4.4, "final_ms": 0.8}},
               "throughput": {}, "steps": [
                   {"name": "runtime switch", "detail": "torch eager fp32 → onnxruntime fp32", "ratio": 3.5},
                   {"name": "quantize", "detail": "onnxruntime fp32 → onnxruntime static INT8", "ratio": 1.57}]}
    base = {"latency_ms_p50": 100.0, "latency_batch": 1, "accuracy": 0.9, "throughput": 116.0,
            "throughput_batch": 64, "bench": [{"batch_size": 1, "p50_ms": 100.0, "throughput": 10.0},
                                              {"batch_size": 64, "p50_ms": 551.0, "throughput": 116.0}]}
    final = {"latency_ms_p50": 1.0, "latency_batch": 1, "accuracy": 0.9, "throughput": 4034.0,
             "throughput_batch": 1, "bench": [{"batch_size": 1, "p50_ms": 1.0, "throughput": 1000.0},
                                              {"batch_size": 64, "p50_ms": 20.0, "throughput": 3200.0}]}
    with RunStore(tmp_path / "runs.sqlite") as store:
        rid = store.create_run("static int8", "[model]\n", "small_cnn", ["quantize"])
        store.finish_run(rid, "completed", {"baseline": base, "final": final, "speedup": speedup,
                                            "stages": [{"name": "quantize", "before": base, "after": final}]})
        report = build_report(store, [rid], predictions=False)
    assert 'id="caveat">Unreliable measurement: other processes used 1.20 CPU cores' in report.html
    assert 'id="split">By cause (paired): runtime switch (torch eager fp32 → onnxruntime fp32) 3.50x' in report.html
    assert report.data["headline"]["speedup"] == 5.5
    # The before/after table puts throughput of both columns at the same batch (64), not 116 beside 4034.
    rows = report.data["comparison"]
    assert [r["throughput_batch"] for r in rows] == [64, 64]
    assert [r["throughput"] for r in rows] == [116.0, 3200.0]


# ------------------------------------------------------------------------------------ two real runs


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int, int]]:
    """A small CNN and a half-width one, trained for a few steps on the default shapes data."""
    home = tmp_path_factory.mktemp("report-home")
    shared = Path(__file__).resolve().parents[2] / ".pytest_cache" / "workbench-datasets"
    shared.mkdir(parents=True, exist_ok=True)
    (home / "datasets").symlink_to(shared, target_is_directory=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WORKBENCH_HOME", str(home))
        store = RunStore(home / "runs.sqlite")
        ids = []
        for name, width in (("baseline", 1.0), ("slim", 0.5)):
            r = tiny_recipe(name, threads=1, telemetry_hz=10.0)
            r.model.width = width
            r.train.max_steps = 6
            out = run_recipe(r, store=store)
            assert out.status == "completed", out.error
            ids.append(out.run_id)
        store.close()
    yield home / "runs.sqlite", ids[0], ids[1]


class _Checker(HTMLParser):
    """Collects tags and attributes and checks that non-void elements are closed in order."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unexpected </{tag}> (open: {self.stack[-3:]})")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _parse(html: str) -> _Checker:
    c = _Checker()
    c.feed(html)
    c.close()
    assert not c.errors, c.errors[:5]
    assert not c.stack, f"unclosed: {c.stack}"
    return c


def test_report_of_two_runs_is_valid_self_contained_html_with_the_stored_numbers(
        two_runs: tuple[Path, int, int], tmp_path: Path) -> None:
    db, a, b = two_runs
    store = RunStore(db)
    out = tmp_path / "report.html"
    report = write_report(store, [a, b], out, csv_path=tmp_path / "r.csv", json_path=tmp_path / "r.json")
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    doc = _parse(html)
    tags = [t for t, _ in doc.tags]
    assert tags.count("html") == 1 and tags.count("h1") == 1 and tags.count("title") >= 1
    ids = {attrs.get("id") for _, attrs in doc.tags}
    for section in ("headline", "comparison", "pareto", "loader", "telemetry", "predictions", "environment",
                    "recipes"):
        assert section in ids, section

    # The headline's numbers are the store's numbers.
    fa, fb = store.get_run(a).final, store.get_run(b).final
    speed = fa["latency_ms_p50"] / fb["latency_ms_p50"]
    delta = (fb["accuracy"] - fa["accuracy"]) * 100
    size = fa["size_bytes"] / fb["size_bytes"]
    head = report.data["headline"]
    assert head["baseline_run"] == a and head["final_run"] == b
    assert math.isclose(head["speedup"], speed) and math.isclose(head["size_ratio"], size)
    expected = (f"{speed:.1f}x faster" if speed >= 1 else f"{1 / speed:.1f}x slower")
    headline_text = html.split('id="headline">', 1)[1].split("<", 1)[0]
    assert expected in headline_text and f"{abs(delta):.1f} points accuracy" in headline_text
    assert f"{size:.1f}x smaller" in headline_text
    assert f"{fb['params']:,}" in html and f"{fa['params']:,}" in html  # before/after table

    # Every chart is inline SVG that parses; every image is an embedded PNG.
    svgs = re.findall(r"<svg\b.*?</svg>", html, flags=re.S)
    assert len(svgs) >= 3  # pareto + telemetry (CPU and memory per run)
    assert len(svgs) == html.count('class="chart"')
    for svg in svgs:
        root = ET.fromstring(svg)
        assert root.get("data-chart") in ("line", "scatter", "bar") and root.find("title") is not None
    imgs = [attrs for tag, attrs in doc.tags if tag == "img"]
    assert imgs, "sample predictions missing"
    from PIL import Image

    for attrs in imgs:
        src = attrs["src"] or ""
        assert src.startswith("data:image/png;base64,")
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).verify()

    # Nothing external: no URL anywhere, no scripts.
    for _, attrs in doc.tags:
        for key in ("src", "href"):
            assert not (attrs.get(key) or "").startswith(("http:", "https:", "//")), attrs
    assert "http://" not in html and "https://" not in html and "<script" not in html and "<link" not in html

    # Recipes are there verbatim (escaped), and the environment fingerprint.
    assert 'name = &#34;baseline&#34;' in html and 'name = &#34;slim&#34;' in html  # escaped by Jinja2's autoescape
    env = store.get_run(a).summary["environment"]
    assert env["torch"] in html and env["onnxruntime"] in html

    # Exports carry the same numbers.
    exported = json.loads((tmp_path / "r.json").read_text())
    assert math.isclose(exported["headline"]["speedup"], speed)
    rows = dict(csv.reader((tmp_path / "r.csv").read_text().splitlines()[1:]))
    assert math.isclose(float(rows["headline.speedup"]), speed, rel_tol=1e-5)
    assert any(k.endswith(".latency_ms_p50") for k in rows)
    store.close()


def test_report_says_why_predictions_are_missing(two_runs: tuple[Path, int, int], tmp_path: Path) -> None:
    db, a, b = two_runs
    store = RunStore(db)
    weights = store.artifacts(b, "weights")[-1].path
    moved = tmp_path / "moved.safetensors"
    shutil.copy(weights, moved)
    weights.unlink()
    try:
        report = build_report(store, [a, b])
    finally:
        shutil.copy(moved, weights)
    pr = report.data["predictions"]
    assert pr["available"] and pr["runs"] == [str(a)]
    assert "no longer exists" in pr["status"][str(b)] and "no longer exists" in report.html
    store.close()


def test_report_with_a_sweep_draws_its_charts() -> None:
    store = RunStore()
    rid = store.create_run("s", 'name = "s"\n', "mlp", [], kind="sweep")
    pts = [{"kind": "inference", "precision": "fp32", "batch_size": b, "p50_ms": 0.1 * b, "p95_ms": 0.15 * b,
            "throughput": 1000.0 * b ** 0.5, "mean_ms": 0.1 * b, "iters": 5} for b in (1, 8, 32, 128)]
    train = [{**p, "kind": "train", "throughput": p["throughput"] / 3} for p in pts]
    verdict = {"kind": "loader-bound", "wait_fraction": 0.6, "message": "loader-bound: 60%", "suggestions": ["cache"]}
    lpts = [{"num_workers": w, "pin_memory": False, "cache": c, "batch_size": 64, "loader_samples_per_s": 900.0 + w,
             "train_samples_per_s": 500.0 * (1 + w + c), "data_wait_s": 1.0, "compute_s": 1.0,
             "data_wait_fraction": 0.5, "verdict": verdict, "is_default": w == 0 and not c,
             "label": f"{w} workers, {'cache' if c else 'no cache'}"} for w in (0, 1) for c in (False, True)]
    summary = {"sweep": {"inference": pts, "train": train, "skipped": [{"what": "fp16", "reason": "needs CUDA"}],
                         "budget": {"budget_ms": 2.0, "latency_key": "p95_ms", "best": pts[1],
                                    "message": "best within 2 ms"},
                         "loader": {"batch_size": 64, "points": lpts, "default": lpts[0], "best": lpts[-1],
                                    "speedup": 3.0, "skipped": [], "notes": []}},
               "environment": {"torch": "x"}}
    store.finish_run(rid, "completed", summary)
    report = build_report(store, [rid])
    _parse(report.html)
    kinds = [ET.fromstring(s).get("data-chart") for s in re.findall(r"<svg\b.*?</svg>", report.html, flags=re.S)]
    assert kinds.count("line") >= 2 and kinds.count("scatter") == 1 and kinds.count("bar") == 2
    assert "3.0x faster training" in report.data["headline"]["text"]
    assert "needs CUDA" in report.html and "loader-bound" in report.html
    assert "sweeps keep no trained model" in report.html


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Chromium is not installed (/usr/bin/chromium)")
def test_report_renders_in_headless_chromium(two_runs: tuple[Path, int, int], tmp_path: Path) -> None:
    db, a, b = two_runs
    out = tmp_path / "report.html"
    write_report(RunStore(db), [a, b], out)
    png = tmp_path / "report.png"
    env = {**os.environ, "HOME": str(tmp_path)}  # Chromium writes a profile; keep it out of the real home
    proc = subprocess.run([str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu",
                           "--disable-background-networking", "--hide-scrollbars", "--window-size=1100,2400",
                           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={png}", out.as_uri()],
                          capture_output=True, text=True, timeout=80, env=env)
    assert png.exists() and png.stat().st_size > 10_000, proc.stderr[-2000:]
    from PIL import Image, ImageStat

    with Image.open(png) as im:
        assert im.size == (1100, 2400)
        stat = ImageStat.Stat(im.convert("L"))
        assert stat.stddev[0] > 10  # text, tables and charts drawn, not a blank page


def test_user_text_is_escaped_by_the_template(tmp_path: Path) -> None:
    hostile = '<img src=x onerror="alert(1)">'
    m = {"latency_ms_p50": 2.0, "latency_batch": 1, "accuracy": 0.5}
    with RunStore(tmp_path / "runs.sqlite") as store:
        rid = store.create_run(hostile, f'name = "{hostile}"\n', "small_cnn", [])
        store.finish_run(rid, "failed", {"final": m}, error=hostile)
        html = build_report(store, [rid], predictions=False).html
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in html


def test_report_shows_the_early_exit_curve_and_eval_figures(tmp_path: Path) -> None:
    curve = [{"threshold": t, "accuracy": 0.8 + 0.1 * t, "mean_macs": 100 * (0.3 + 0.7 * t),
              "exit_shares": [1 - t, 0.0, t], "macs_saved": 0.7 * (1 - t)} for t in (0.0, 0.5, 1.01)]
    record = {"name": "early_exit", "threshold": 0.5, "rule": "max_prob", "exits": ["stages.0", "stages.1"],
              "validation": {"curve": curve, **curve[1], "full_accuracy": 0.9},
              "eval": {"full_accuracy": 0.9, "accuracy": 0.88, "full_macs": 100, "mean_macs": 60.0, "macs_saved": 0.4,
                       "exit_shares": [0.5, 0.2, 0.3]},
              "latency": {"reliable": True, "full": {"mean_ms": 2.0, "p95_ms": 2.2},
                          "early_exit": {"mean_ms": 1.25, "p95_ms": 2.4},
                          "paired": {"ratio": 1.6, "ci95": [1.5, 1.7]}}}
    m = {"latency_ms_p50": 2.0, "latency_batch": 1, "accuracy": 0.9}
    with RunStore(tmp_path / "runs.sqlite") as store:
        rid = store.create_run("ee", "[model]\n", "resnet", ["early-exit"])
        store.finish_run(rid, "completed", {"baseline": m, "final": {**m, "latency_ms_p50": 1.25},
                                            "stages": [record]})
        report = build_report(store, [rid], predictions=False)
    html = report.html
    assert 'id="early-exits"' in html and "early exits, accuracy against compute" in html
    assert "50 % · 20 % · 30 %" in html and "1.60x faster" in html and "40 % saved" in html
    assert report.data["early_exits"][0]["threshold"] == 0.5


def test_report_shows_a_stored_layer_profile_with_its_verdicts(tmp_path: Path) -> None:
    from workbench.analysis.profile import LayerProfile, Profile, Verdict, save_profile

    rows = [LayerProfile(name=f"n{i}", layer=f"features.{i}", op="QLinearConv" if i else "Conv", time_ms=1.0 + i,
                         share=(1.0 + i) / 66, macs=1000 * i, precision="int8" if i else "float",
                         output_shape=[1, 8, 4, 4]) for i in range(11)]
    rows.append(LayerProfile(name="x", layer="<b>hostile</b>", op="Relu", time_ms=0.01, share=0.0))
    profile = Profile(source="run 1 final (static ONNX)", kind="onnx", runtime="onnxruntime CPU", batch=1,
                      total_ms=66.0, threads=2, iters=10, layers=rows)
    verdict = Verdict("float_layers", "1 compute layer(s) stayed float after quantization: features.0",
                      "loosen the budget", 1 / 66, ["features.0"])
    m = {"latency_ms_p50": 2.0, "latency_batch": 1, "accuracy": 0.9}
    with RunStore(tmp_path / "runs.sqlite") as store:
        rid = store.create_run("q", "[model]\n", "small_cnn", ["quantize"])
        store.finish_run(rid, "completed", {"baseline": m, "final": m})
        plain = build_report(store, [rid], predictions=False)
        assert 'id="layers"' not in plain.html and plain.data["layer_profiles"] == []
        save_profile(store, rid, profile, [verdict],
                     {"before": "base", "before_total_ms": 90.0, "after_total_ms": 66.0, "counts": {"faster": 9}})
        report = build_report(store, [rid], predictions=False)
    html = report.html
    assert 'id="layers"' in html and "Where the time goes, layer by layer" in html
    section = html[html.index('id="layers"'):]
    assert section.index("features.10") < section.index("features.9")  # slowest first
    assert "Top 10 of 12 rows" in section and "hostile" not in section  # the fastest rows are cut
    assert "stayed float after quantization: features.0" in section and "Try: loosen the budget" in section
    assert "90.0 ms &rarr; 66.0 ms" in section and "9 faster" in section
    assert report.data["layer_profiles"][0]["top"][0]["layer"] == "features.10"
