"""Data-parallel training through torch.distributed.run: 2 CPU ranks with gloo, cancel, a failing rank."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

from tests.helpers import tiny_recipe
from workbench.cli import main
from workbench.core.events import CancelToken, RecordingReporter
from workbench.core.store import RunStore
from workbench.recipe import DistributedSection, Recipe, dumps_recipe
from workbench.techniques import run_recipe
from workbench.techniques.distributed.launch import node_commands

pytestmark = pytest.mark.slow


def _recipe(nproc: int, batch: int, epochs: int = 3) -> Recipe:
    r = tiny_recipe("ddp", epochs=epochs, threads=1, rounds=5)
    r.model.zoo = "mlp"
    r.data.source = "synthetic"
    r.data.synthetic_shape = [16]
    r.data.synthetic_classes = 4
    r.data.synthetic_samples = 512
    r.data.augment = False
    r.batching.batch_size = batch
    r.train.lr = 0.01
    r.bench.batch_sizes = [1]
    if nproc > 1:
        r.distributed = DistributedSection(nproc_per_node=nproc, threads_per_process=1)
    return r


def _no_ranks_left(timeout_s: float = 15.0) -> bool:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        kids = [p for p in psutil.Process().children(recursive=True)
                if "torch.distributed.run" in " ".join(p.cmdline()) or "distributed.worker" in " ".join(p.cmdline())]
        if not kids:
            return True
        time.sleep(0.2)
    return False


def test_two_ranks_train_one_model_and_match_one_process_at_the_same_global_batch(tmp_path: Path) -> None:
    with RunStore(tmp_path / "runs.sqlite") as store:
        single = run_recipe(_recipe(1, 64), store=store)
        assert single.status == "completed", single.error
        rep = RecordingReporter()
        ddp = run_recipe(_recipe(2, 32), store=store, reporter=rep)
        assert ddp.status == "completed", ddp.error
        stored = store.get_run(ddp.run_id)
    info = ddp.summary["distributed"]
    assert info["world_size"] == 2 and info["backend"] == "gloo"
    assert info["per_rank_batch"] == 32 and info["global_batch"] == 64
    assert info["ranks_in_sync"] is True and len(info["parameter_checksums"]) == 2  # gradients were averaged
    a, b = single.summary["final"]["accuracy"], ddp.summary["final"]["accuracy"]
    assert abs(a - b) * 100 <= 1.0, (a, b)
    assert stored is not None and stored.status == "completed" and "ddp2" in stored.techniques
    # The launcher relayed rank 0's log lines to the caller's reporter while the run went on.
    assert any("distributed: 2 ranks" in args[0] for args in rep.of("log"))
    assert _no_ranks_left()


def test_stop_ends_every_rank_and_records_cancelled(tmp_path: Path) -> None:
    cancel = CancelToken()

    class CancelOnFirstMetric(RecordingReporter):
        def metrics(self, stage: str, step: int, values: Any, t: float | None = None) -> None:
            if stage == "train":
                cancel.cancel()

    r = _recipe(2, 8, epochs=200)
    with RunStore(tmp_path / "runs.sqlite") as store:
        timer = threading.Timer(90.0, cancel.cancel)  # a safety net: the test never hangs
        timer.start()
        try:
            out = run_recipe(r, store=store, reporter=CancelOnFirstMetric(), cancel=cancel)
        finally:
            timer.cancel()
        assert out.status == "cancelled"
        assert store.get_run(out.run_id).status == "cancelled"  # type: ignore[union-attr]
    assert _no_ranks_left()


def test_a_killed_launcher_takes_its_ranks_along_and_the_run_is_not_left_running(tmp_path: Path) -> None:
    recipe = tmp_path / "ddp.toml"
    recipe.write_text(dumps_recipe(_recipe(2, 8, epochs=200)))
    cli = subprocess.Popen([sys.executable, "-m", "workbench", "run", str(recipe)], env=dict(os.environ),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        ranks: list[psutil.Process] = []
        while time.time() < deadline and len(ranks) < 2:  # wait until both ranks are training
            ranks = [p for p in psutil.Process(cli.pid).children(recursive=True)
                     if "distributed.worker" in " ".join(p.cmdline())
                     and "torch.distributed.run" not in " ".join(p.cmdline())]  # not the launcher's agent
            time.sleep(0.5)
        assert len(ranks) == 2, "the ranks never started"
        time.sleep(3.0)
        os.kill(cli.pid, signal.SIGKILL)
        cli.wait(timeout=10)
        gone, alive = psutil.wait_procs(ranks, timeout=30)
        assert not alive, [p.pid for p in alive]
    finally:
        if cli.poll() is None:
            cli.kill()
    with RunStore() as store:  # opening the store judges runs whose process is gone
        runs = store.list_runs()
        assert len(runs) == 1 and runs[0].status in ("interrupted", "cancelled"), runs[0].status


def test_a_rank_that_raises_fails_the_run_with_its_message(tmp_path: Path) -> None:
    model = tmp_path / "flaky.py"
    model.write_text(
        "import os\nimport torch\n\n"
        "class Flaky(torch.nn.Module):\n"
        "    def __init__(self, num_classes=4, **kwargs):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(16, num_classes)\n\n"
        "    def forward(self, x):\n"
        "        if self.training and os.environ.get('RANK') == '1':\n"
        "            raise RuntimeError('boom on rank 1')\n"
        "        return self.fc(x.flatten(1))\n")
    r = _recipe(2, 16)
    r.model.source, r.model.path, r.model.class_name = "python", str(model), "Flaky"
    with RunStore(tmp_path / "runs.sqlite") as store:
        out = run_recipe(r, store=store)
        assert out.status == "failed"
        assert "rank 1" in out.error and "boom on rank 1" in out.error
        assert store.get_run(out.run_id).status == "failed"  # type: ignore[union-attr]
    assert _no_ranks_left()


def test_several_machines_get_the_exact_torchrun_command_each(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    r = _recipe(2, 16)
    r.distributed = DistributedSection(nproc_per_node=4, nnodes=2, rdzv_endpoint="10.0.0.5:29400")
    path = tmp_path / "multi.toml"
    path.write_text(dumps_recipe(r))
    cmds = node_commands(path, r)
    assert len(cmds) == 2 and "--node_rank=0" in cmds[0] and "--node_rank=1" in cmds[1]
    assert "--nnodes=2" in cmds[1] and "--nproc_per_node=4" in cmds[1] and "--rdzv_endpoint=10.0.0.5:29400" in cmds[1]
    assert cmds[0].endswith(f"-m workbench.techniques.distributed.worker {path}")
    assert main(["run", str(path)]) == 0  # prints the commands instead of running
    out = capsys.readouterr().out
    assert out.count("torchrun --nnodes=2") == 2
    assert RunStore().list_runs() == []  # nothing recorded here: node 0's rank 0 records the run


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_gpus_with_nccl(tmp_path: Path) -> None:
    r = _recipe(2, 32)
    r.distributed = DistributedSection(nproc_per_node=2, backend="nccl")
    r.precision.device = "cuda"
    with RunStore(tmp_path / "runs.sqlite") as store:
        out = run_recipe(r, store=store)
    assert out.status == "completed", out.error
    assert out.summary["distributed"]["backend"] == "nccl" and out.summary["distributed"]["ranks_in_sync"]
