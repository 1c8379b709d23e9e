"""Precision panel: device, autocast, loss scaling, memory format, compile (the [precision] section).

Options this machine cannot run are disabled, and their tooltip says why (fp16 autocast, TF32 and
forced loss scaling need CUDA; on a CPU, bf16 is the reduced precision to try).
"""

from __future__ import annotations

from PySide6.QtGui import QStandardItemModel
from PySide6.QtWidgets import QComboBox, QLabel

from workbench.gui.panels import register_panel
from workbench.gui.panels.base import RecipePanel
from workbench.gui.widgets import cpu_has_native_bf16, cuda_available


def set_item_enabled(combo: QComboBox, value: object, enabled: bool, tooltip: str) -> None:
    """Enable/disable one choice of a combo box and give it a tooltip (the reason)."""
    i = combo.findData(value)
    model = combo.model()
    if i < 0 or not isinstance(model, QStandardItemModel):
        return
    item = model.item(i)
    item.setEnabled(enabled)
    item.setToolTip(tooltip)


@register_panel(order=40)
class PrecisionPanel(RecipePanel):
    section_name = "precision"
    title = "Precision (AMP)"
    description = ("Lower-precision math and memory layout. Each option trades a little numeric accuracy or "
                   "start-up time for speed; the run measures whether it actually paid off on this machine.")

    def build(self) -> None:
        self.device = self.add_choice(
            "device", "Device", "Where the model runs. auto picks CUDA when a GPU is present, else the CPU.",
            labels={"auto": "auto", "cpu": "CPU", "cuda": "CUDA GPU"})
        self.autocast = self.add_choice(
            "autocast", "Autocast", "Run matmuls and convolutions in 16-bit floats (automatic mixed precision). "
            "Faster and half the activation memory on hardware with 16-bit units; slightly less precise.",
            labels={"none": "none (fp32)", "bf16": "bf16", "fp16": "fp16"})
        self.scaler = self.add_choice(
            "grad_scaler", "Grad scaler", "Loss scaling keeps tiny fp16 gradients from flushing to zero. Needed "
            "for fp16 autocast, pointless for bf16 and fp32; auto turns it on exactly when needed.",
            labels={"auto": "auto", "on": "on", "off": "off"})
        self.channels_last = self.add_check(
            "channels_last", "Channels last", "Store image tensors as NHWC. Convolutions with fast NHWC kernels "
            "(Tensor Cores, oneDNN) speed up; others may slow down; measure it.")
        self.compile = self.add_check(
            "compile", "torch.compile", "Compile the model into fused kernels. Often faster for training and "
            "inference, but the first steps take extra seconds (or minutes) to compile.")
        self.compile_mode = self.add_choice(
            "compile_mode", "Compile mode", "default compiles quickly; reduce-overhead uses CUDA graphs to cut "
            "launch overhead for small batches; max-autotune searches kernels for speed and compiles longest.")
        self.tf32 = self.add_check(
            "tf32", "TF32 matmuls", "On Ampere and newer GPUs, run fp32 matmuls on Tensor Cores with a 10-bit "
            "mantissa: much faster, slightly less precise. No effect without CUDA.")
        native = cpu_has_native_bf16()
        self.cpu_note = QLabel(
            "This CPU has native bf16 (AVX-512 BF16/AMX): bf16 autocast can speed it up."
            if native else
            "This CPU has no native bf16 (no AVX-512 BF16/AMX): bf16 autocast is emulated and may be slower "
            "than fp32 here; measure before keeping it.")
        self.cpu_note.setObjectName("precision_cpu_note")
        self.cpu_note.setWordWrap(True)
        self.cpu_note.setStyleSheet("color: #555;")
        self.add_widget(self.cpu_note)
        self._apply_capabilities()

    def _apply_capabilities(self) -> None:
        if cuda_available():
            return
        bf16 = ("this CPU has native bf16 (AVX-512 BF16/AMX)" if cpu_has_native_bf16()
                else "this CPU has no native bf16, so bf16 is emulated: measure it")
        set_item_enabled(self.device, "cuda", False, "Disabled: no CUDA device on this machine.")
        set_item_enabled(self.autocast, "fp16", False,
                         f"Disabled: fp16 autocast needs CUDA. On this CPU use bf16 ({bf16}).")
        set_item_enabled(self.autocast, "bf16", True, f"bf16 autocast on the CPU: {bf16}.")
        set_item_enabled(self.scaler, "on", False,
                         "Disabled: loss scaling is for fp16 autocast, which needs CUDA. auto/off are right here.")
        self.autocast.setToolTip(self.autocast.toolTip() + f"\n\nfp16 is disabled: it needs CUDA. On this CPU "
                                 f"use bf16 ({bf16}).")
        self.scaler.setToolTip(self.scaler.toolTip() + "\n\n'on' is disabled: it needs fp16 autocast, which "
                               "needs CUDA.")
        self.tf32.setEnabled(False)
        self.tf32.setToolTip("Disabled: TF32 needs an NVIDIA Ampere or newer GPU (CUDA); this machine has none.")

    def sync_states(self) -> None:
        self.compile_mode.setEnabled(self.compile.isChecked())
