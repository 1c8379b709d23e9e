"""Runs view: the Pareto chart (points, frontier, clicks) and the Report action (job, dialogs, HTML).

Runs are inserted into a real store with the summary shape the pipeline writes, like
test_runs_view.py. The frontier is checked on numbers built so that the latency and the throughput
frontiers differ.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from PySide6.QtCore import QUrl

from workbench.analysis.pareto import short_techniques
from workbench.analysis.report import headline
from workbench.core.store import RunStore
from workbench.gui.runs import RunsView


def metrics(acc: float, p50: float, thr: float, size: int) -> dict[str, Any]:
    return {"accuracy": acc, "latency_ms_p50": p50, "latency_ms_p95": p50 * 1.3, "throughput": thr,
            "size_bytes": size, "params": 1_000_000, "latency_batch": 1, "throughput_batch": 32}


# Latency frontier: B, A, D (C is slower and worse than B). Throughput frontier: D, A, C (B has less
# throughput and less accuracy than A).
A = metrics(0.90, 4.0, 2400.0, 4_000_000)
B = metrics(0.85, 2.0, 1500.0, 1_000_000)
C = metrics(0.80, 3.0, 3000.0, 2_000_000)
D = metrics(0.95, 8.0, 1000.0, 8_000_000)


@pytest.fixture
def store(tmp_path: Path) -> RunStore:
    s = RunStore(tmp_path / "runs.sqlite")
    yield s
    s.close()


@pytest.fixture
def runs(store: RunStore) -> dict[str, int]:
    ids = {}
    for key, name, techniques, m in (("A", "fp32 baseline", [], A), ("B", "int8", ["int8-dynamic"], B),
                                     ("C", "pruned", ["prune-l1-0.5", "int8-dynamic"], C),
                                     ("D", "distilled big", ["distill"], D)):
        ids[key] = store.create_run(name, '[model]\nzoo = "mlp"\n', "mlp", techniques)
        store.finish_run(ids[key], "completed", {"final": m})
    ids["sweep"] = store.create_run("a sweep", "[model]\n", "mlp", [], kind="sweep")
    store.finish_run(ids["sweep"], "completed", {"kind": "sweep", "sweep": {"inference": [
        {"kind": "inference", "precision": "fp32", "batch_size": 1, "p50_ms": 1.0, "p95_ms": 1.2,
         "throughput": 1000.0}]}})
    return ids


@pytest.fixture
def view(qtbot: Any, store: RunStore, runs: dict[str, int]) -> RunsView:
    v = RunsView(store)
    qtbot.addWidget(v)
    v.resize(1200, 800)
    v.show()
    qtbot.waitExposed(v)
    yield v
    assert v.shutdown(10.0)


def test_pareto_has_one_point_per_run_and_the_right_frontier(view: RunsView, runs: dict[str, int]) -> None:
    view.select_runs([runs[k] for k in "ABCD"] + [runs["sweep"]])
    view.compare_tabs.setCurrentWidget(view.pareto)
    values = view.pareto_values()
    assert values["x_key"] == "latency_ms_p50"
    assert sorted(p[0] for p in values["points"]) == sorted(runs[k] for k in "ABCD")  # one per run; sweep has no accuracy
    by_id = {p[0]: p for p in values["points"]}
    assert by_id[runs["A"]][1] == f"#{runs['A']} fp32"
    assert by_id[runs["C"]][1] == f"#{runs['C']} {short_techniques(['prune-l1-0.5', 'int8-dynamic'])}"
    assert by_id[runs["C"]][1].endswith("…")  # long technique lists are elided
    assert by_id[runs["B"]][2:] == pytest.approx((2.0, 85.0))
    label = {k: by_id[runs[k]][1] for k in "ABCD"}
    assert values["front"] == [label["B"], label["A"], label["D"]]
    assert "sweep" in view.pareto.note_label.text()
    x, y = view.pareto.front_line.getData()
    assert list(x) == [2.0, 4.0, 8.0] and list(y) == pytest.approx([85.0, 90.0, 95.0])

    view.pareto.set_x_mode("throughput")
    values = view.pareto_values()
    assert values["x_key"] == "throughput"
    assert values["front"] == [label["D"], label["A"], label["C"]]
    scatter = view.pareto.scatter
    assert len(scatter.points()) == 4  # the same items, updated

    # The comparison still names the baseline and shows the ratios next to it.
    assert view.baseline_id() == runs["A"]
    rows = {r["run_id"]: r for r in view.speedup_rows()}
    assert rows[runs["B"]]["latency_speedup"] == pytest.approx(2.0)
    assert rows[runs["B"]]["accuracy_delta_pts"] == pytest.approx(-5.0)
    assert rows[runs["B"]]["size_ratio"] == pytest.approx(0.25)


def test_clicking_a_point_finds_the_run_and_double_click_opens_it(view: RunsView, runs: dict[str, int],
                                                                  qtbot: Any) -> None:
    view.select_runs([runs[k] for k in "ABCD"])
    spot = next(s for s in view.pareto.scatter.points() if s.data() == runs["C"])
    view.pareto.scatter.sigClicked.emit(view.pareto.scatter, [spot], SimpleNamespace(double=lambda: False))
    current = view.proxy.mapToSource(view.table.currentIndex()).row()
    assert view.model.run_at(current).id == runs["C"]
    assert view.selected_ids() == [runs[k] for k in "ABCD"]  # the comparison is kept
    with qtbot.waitSignal(view.openRecipeRequested, timeout=1000) as blocker:
        view.pareto.scatter.sigClicked.emit(view.pareto.scatter, [spot], SimpleNamespace(double=lambda: True))
    assert "mlp" in blocker.args[0]


def test_sweep_rows_open_in_the_sweep_tab(view: RunsView, runs: dict[str, int], qtbot: Any) -> None:
    view.select_runs([runs["sweep"]])
    assert view.open_sweep_action.isEnabled() and view.report_action.isEnabled()
    with qtbot.waitSignal(view.openSweepRequested, timeout=1000) as blocker:
        view.open_sweep_action.trigger()
    assert blocker.args == [runs["sweep"]]
    view.select_runs([runs["A"]])
    assert not view.open_sweep_action.isEnabled()


def test_report_writes_self_contained_html_with_the_headline_numbers(
        view: RunsView, runs: dict[str, int], tmp_path: Path, qtbot: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out" / "my-report"  # no suffix: .html is added
    target.parent.mkdir()
    opened: list[QUrl] = []
    asked: list[Path] = []
    monkeypatch.setattr(view, "ask_report_path", lambda default: target)
    extras_named: list[list[Path]] = []
    monkeypatch.setattr(view, "ask_open_report",
                        lambda path, extras: asked.append(path) or extras_named.append(list(extras)) or True)
    monkeypatch.setattr(view, "open_url", lambda url: opened.append(url) or True)
    view.select_runs([runs["B"], runs["A"]])
    assert view.report_run_ids() == [runs["A"], runs["B"]]  # the baseline first
    with qtbot.waitSignal(view.reportWritten, timeout=60_000) as blocker:
        view.report_action.trigger()
        assert not view.report_action.isEnabled()  # one report at a time
    out = Path(blocker.args[0])
    assert out == target.with_name("my-report.html")
    page = out.read_text(encoding="utf-8")
    assert headline(A, B)["text"] in page  # "2.0x faster, −5.0 points accuracy, 4.0x smaller"
    for number in ("2,400", "1,500", "90.0 %", "85.0 %", "4.00 MB", "1.00 MB"):
        assert number in page, number
    assert not re.search(r"https?://", page)
    data = json.loads(target.with_name("my-report.json").read_text())
    assert data["headline"]["speedup"] == pytest.approx(2.0)
    assert target.with_name("my-report.csv").read_text().startswith("key,value")
    assert asked == [out] and opened == [QUrl.fromLocalFile(str(out))]
    assert extras_named == [[out.with_suffix(".csv"), out.with_suffix(".json")]]  # the user is told what else
    assert "my-report.csv" in view.report_status.text()
    mode = out.stat().st_mode & 0o777
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # a normal file others may read, not a 0600 temp file

    # No browser to open it with: the user is told where the report is.
    errors: list[str] = []
    monkeypatch.setattr(view, "open_url", lambda url: False)
    monkeypatch.setattr(view, "show_error", lambda title, text: errors.append(text))
    with qtbot.waitSignal(view.reportWritten, timeout=60_000):
        view.start_report([runs["A"]], out, predictions=False)
    assert errors and str(out) in errors[0] and str(out) in view.report_status.text()
    qtbot.waitUntil(view.report_action.isEnabled, timeout=5_000)


def test_report_never_overwrites_without_asking(view: RunsView, runs: dict[str, int], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "report.html"
    target.write_text("keep me")
    questions: list[str] = []
    monkeypatch.setattr(view, "ask_report_path", lambda default: target)
    monkeypatch.setattr(view, "confirm", lambda title, text: questions.append(text) or False)
    view.select_runs([runs["A"], runs["B"]])
    assert view.report_selected() is None
    assert questions and "report.html" in questions[0]
    assert target.read_text() == "keep me" and not view.report_busy()


@pytest.mark.parametrize("keys", ["ABCD", "BD"])
def test_gui_chart_and_report_ring_the_same_frontier(view: RunsView, runs: dict[str, int], store: Any,
                                                     keys: str) -> None:
    """One Pareto rule (engine.pareto): for the same selection both draw the same points and frontier."""
    from workbench.analysis.report import build_report

    view.select_runs([runs[k] for k in keys])
    gui = view.pareto_values()
    report = build_report(store, [runs[k] for k in keys], predictions=False).data["pareto"]
    assert sorted(gui["front"]) == sorted(report["front"])
    assert sorted(p["label"] for p in report["points"]) == sorted(label for _id, label, _x, _y in gui["points"])
