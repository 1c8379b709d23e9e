"""DataLoader panel: worker processes, pinned memory, prefetching (the [loader] section).

This is the file to copy when adding a panel (see ``workbench/gui/panels/__init__.py``).
"""

from __future__ import annotations

from workbench.gui.panels import register_panel
from workbench.gui.panels.base import RecipePanel
from workbench.gui.widgets import cuda_available


@register_panel(order=60)
class LoaderPanel(RecipePanel):
    section_name = "loader"
    title = "DataLoader"
    description = ("How batches are produced. If the dashboard shows a high data-wait fraction, the model "
                   "is starved by the loader: add workers or enable the data cache.")

    def build(self) -> None:
        self.add_spin("num_workers", "Workers", "Worker processes that decode and augment batches in parallel "
                      "with training. More workers hide data loading time but cost RAM and start-up time; "
                      "0 loads in the training thread.", special="0 (main thread)")
        self.pin = self.add_check("pin_memory", "Pin memory", "Page-locked host buffers make host→GPU copies "
                                  "faster and asynchronous. Only useful with CUDA; it costs locked RAM.")
        self.prefetch = self.add_spin("prefetch_factor", "Prefetch factor", "Batches each worker prepares ahead. "
                                      "Higher smooths out slow samples at the cost of memory.")
        self.persistent = self.add_check("persistent_workers", "Persistent workers",
                                         "Keep worker processes alive between epochs so their start-up cost "
                                         "is paid once; they hold their memory for the whole run.")
        self.add_check("drop_last", "Drop last batch", "Skip the final incomplete batch of each epoch: every "
                       "step has the same shape (good for compile and BatchNorm) but a few samples are unused.")
        self.add_choice("mp_context", "Start method", "How worker processes start. Never fork: forking a process "
                        "that runs Qt threads can deadlock. 'forkserver' starts faster than 'spawn'; both need "
                        "a picklable dataset.")

    def sync_states(self) -> None:
        if not cuda_available():
            self.pin.setEnabled(False)
            self.pin.setToolTip("Disabled: no CUDA device on this machine. Pinned memory only speeds up "
                                "host→GPU copies, so it would just lock RAM here.")
        workers = self.widget("num_workers").value()
        for w, _what in ((self.prefetch, "Prefetch factor"), (self.persistent, "Persistent workers")):
            w.setEnabled(workers > 0)
        if workers == 0:
            self.prefetch.setToolTip("Prefetch factor applies only with workers > 0 (no worker, nothing "
                                     "prefetches in the background).")
            self.persistent.setToolTip("Persistent workers apply only with workers > 0.")
