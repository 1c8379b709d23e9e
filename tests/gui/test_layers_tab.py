"""The runs view's "Layers" tab on a real stored INT8 run: profiled on a job, sortable, stored for next time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from PySide6.QtCore import Qt

from tests.helpers import tiny_recipe
from workbench.core.store import RunStore
from workbench.gui.runs import RunsView


@pytest.fixture
def int8_run(tmp_path: Path) -> tuple[RunStore, int]:
    from workbench.recipe import QuantizeSection
    from workbench.techniques import run_recipe

    recipe = tiny_recipe("layers-int8", epochs=1, samples_per_class=20)
    recipe.bench.enabled = False
    recipe.quantize = QuantizeSection(method="dynamic")
    store = RunStore()
    outcome = run_recipe(recipe, store=store)
    assert outcome.status == "completed", outcome.error
    yield store, outcome.run_id
    store.close()


def test_layers_tab_fills_from_a_stored_run(qtbot: Any, int8_run: tuple[RunStore, int]) -> None:
    store, run_id = int8_run
    view = RunsView(store)
    qtbot.addWidget(view)
    view.select_runs([run_id])
    tabs = view.compare_tabs
    assert tabs.tabText(2) == "Layers"
    tabs.setCurrentIndex(2)
    tab = view.layers_tab
    assert tab.table.rowCount() == 0 and tab.profile_button.isEnabled()
    assert f"Run #{run_id}" in tab.title.text()

    job = tab.start_profile()
    assert job is not None and not tab.profile_button.isEnabled()
    qtbot.waitUntil(lambda: tab.result is not None or "failed" in tab.verdicts.text(), timeout=120_000)
    assert tab.result is not None, tab.verdicts.text()
    qtbot.waitUntil(lambda: not job.is_running(), timeout=10_000)
    assert tab.profile_button.isEnabled()

    rows = tab.rows()
    by_layer = {r[0]: r for r in rows}
    conv = by_layer["features.0.0"]
    assert conv[5] == "float \u2192 int8" and conv[1] in ("same", "faster", "slower")
    assert float(conv[2]) > 0 and float(conv[3]) > 0 and conv[6] == conv[7]  # the same MACs, now in INT8
    assert by_layer["features.0.1"][1].startswith("fused into features.0")  # BatchNorm folded
    assert "ms \u2192" in tab.verdicts.text()

    # numeric sort on "Before ms" (not text order); empty cells of added rows sort first
    tab.table.sortItems(2, Qt.SortOrder.DescendingOrder)
    before = [float(r[2]) for r in tab.rows() if r[2]]
    assert before == sorted(before, reverse=True)

    # stored with the run: selecting it again shows the diff at once, without profiling
    view.select_runs([])
    assert tab.table.rowCount() == 0
    view.select_runs([run_id])
    assert tab.result is not None and tab.result["stored"] is True
    assert {r[0] for r in tab.rows()} == set(by_layer)


def test_two_runs_without_saved_models_fail_in_the_label(qtbot: Any, tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.sqlite") as store:
        m = {"accuracy": 0.5, "latency_ms_p50": 2.0, "latency_batch": 1}
        a = store.create_run("a", "[model]\n", "small_cnn", [])
        store.finish_run(a, "completed", {"final": m})
        b = store.create_run("b", "[model]\n", "small_cnn", [])
        store.finish_run(b, "completed", {"final": {**m, "latency_ms_p50": 1.0}})
        view = RunsView(store)
        qtbot.addWidget(view)
        view.select_runs([a, b])
        tab = view.layers_tab
        assert f"Run #{a} against run #{b}" in tab.title.text() or f"Run #{b} against run #{a}" in tab.title.text()
        job = tab.start_profile()
        assert job is not None
        qtbot.waitUntil(lambda: "Profiling failed" in tab.verdicts.text(), timeout=30_000)
        assert "saved no model" in tab.verdicts.text() and tab.result is None
        qtbot.waitUntil(lambda: not job.is_running(), timeout=10_000)
        assert tab.profile_button.isEnabled() and not tab.busy()
