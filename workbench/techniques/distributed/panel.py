"""Data-parallel training panel (the [distributed] section).

When DDP helps: several GPUs, or several machines, each with its own compute. Each process trains
on its own shard of every epoch and the gradients are averaged after each step, so the work per
step is split. When it does not: several processes sharing one CPU's cores. Two processes on two
cores each get one core, and the gradient exchange comes on top, so training is usually no faster
than one process using both cores (the benchmark in BENCHMARKS.md measures exactly that).
"""

from __future__ import annotations

from workbench.gui.panels import register_panel
from workbench.gui.panels.base import RecipePanel


@register_panel(order=95)
class DistributedPanel(RecipePanel):
    section_name = "distributed"
    title = "Data-parallel (DDP)"
    description = ("Train with several processes at once (PyTorch DistributedDataParallel, started by "
                   "torch.distributed.run): each trains on its own share of the data and gradients are averaged "
                   "every step. Helps with several GPUs or machines; on one CPU, processes only share the same "
                   "cores and add communication, so it is rarely faster than one process.")
    optional = True

    def build(self) -> None:
        self.add_spin("nproc_per_node", "Processes per machine", "Ranks on this machine: one per GPU. On a CPU, "
                      "each process gets a share of the cores (see threads per process).")
        self.add_spin("nnodes", "Machines", "Machines taking part. With more than one, the run prints the exact "
                      "torchrun command to start on each machine; the same recipe runs there.")
        self.add_spin("node_rank", "This machine's index", "0 on the machine that records the run.")
        self.add_text("rdzv_endpoint", "Meeting point", "host:port where the machines find each other (machine "
                      "0's address). On one machine the launcher picks a free local port itself.",
                      placeholder="127.0.0.1:29500")
        self.add_choice("backend", "Backend", "How gradients travel: NCCL between GPUs, Gloo on CPUs.",
                        labels={"auto": "Auto (NCCL on GPU, Gloo on CPU)", "gloo": "Gloo", "nccl": "NCCL"})
        self.add_spin("threads_per_process", "Threads per process", "torch threads for each rank; 0 shares this "
                      "machine's cores between its ranks (2 processes on 2 cores: 1 thread each).",
                      special="0 (share the cores)")
