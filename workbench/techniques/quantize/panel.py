"""Quantization panel: INT8 (onnxruntime dynamic/static, PyTorch dynamic) and fp16 (the [quantize] section).

INT8 is not automatically faster: without a VNNI dot-product instruction x86 emulates INT8 GEMMs,
small batch-1 models are memory/overhead bound, and onnxruntime's QOperator Conv path is slow on
x86. The stage always measures the float and the quantized model side by side; this panel says so
up front and shows whether *this* CPU has VNNI (from the engine's one hardware probe).
"""

from __future__ import annotations

import functools

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QLabel

from workbench.gui.panels import register_panel
from workbench.gui.panels.base import RecipePanel, format_module_names, parse_module_names
from workbench.techniques.quantize.config import AUTO_REASONS


@functools.cache
def vnni_status() -> bool | None:
    """Asked once: True/False from the CPU flags, None where they cannot be read."""
    from workbench.techniques.quantize.methods import cpu_has_vnni

    return cpu_has_vnni()


def vnni_text(vnni: bool | None) -> tuple[str, str]:
    """(rich text, style) describing what the CPU's INT8 support means for the expected speed-up."""
    if vnni is True:
        return ("<b>This CPU has VNNI</b> (INT8 dot-product instructions): static INT8 can be faster than fp32, "
                "though small batch-1 models may still be memory-bound. The run measures both side by side.",
                "background: #eaf6ec; color: #1e4620; border: 1px solid #b7dfb9;")
    if vnni is False:
        return ("<b>This CPU has no VNNI</b>: INT8 dot products are emulated, so INT8 is often no faster than fp32 "
                "here (it still shrinks the file about 4×). The run measures both side by side.",
                "background: #fff4e5; color: #663c00; border: 1px solid #f3c98b;")
    return ("Cannot tell whether this CPU has VNNI (neither torch nor the OS says). INT8 speed-ups depend on it; the run "
            "measures float and INT8 side by side.", "background: #f3f3f3; color: #333; border: 1px solid #ddd;")


@register_panel(order=120)
class QuantizePanel(RecipePanel):
    section_name = "quantize"
    title = "Quantization"
    description = ("Store weights (and, for static, activations) as 8-bit integers: about 4× smaller and often "
                   "faster, for a small accuracy cost. INT8 is not always faster (no VNNI, batch-1 memory-bound "
                   "models, QOperator kernels on x86), so the run always measures float and quantized side by side.")
    optional = True

    def build(self) -> None:
        text, style = vnni_text(vnni_status())
        self.cpu_note = QLabel(text)
        self.cpu_note.setObjectName("quantizeCpuNote")
        self.cpu_note.setWordWrap(True)
        self.cpu_note.setTextFormat(Qt.TextFormat.RichText)
        self.cpu_note.setStyleSheet(style + " border-radius: 3px; padding: 6px;")
        self.cpu_note.setToolTip("VNNI (AVX512-VNNI, AVX-VNNI or AMX-INT8) computes INT8 dot products in one "
                                 "instruction; without it INT8 matrix products take three and rarely beat fp32.")
        self.body_layout.insertWidget(0, self.cpu_note)
        self.method = self.add_choice(
            "method", "Method", "Dynamic: no calibration, INT8 weights, activations quantized per batch (Linear/"
            "MatMul only). Static: calibrated INT8 activations too (QDQ), best for CNNs. fp16: for GPU targets. "
            "PyTorch dynamic: INT8 Linear layers that stay in PyTorch.",
            labels={"auto": "Auto (static for CNNs, dynamic otherwise)", "dynamic": "Dynamic INT8 (ORT)", "static": "Static INT8 (ORT, calibrated)",
                    "fp16": "fp16 (GPU targets)", "torch_dynamic": "PyTorch dynamic INT8"},
            item_tips={
                "auto": "Chosen from the model's layers when the run starts: " + AUTO_REASONS["static"] + "; "
                        + AUTO_REASONS["dynamic"] + ".",
                "dynamic": "No calibration data. Speeds up Linear/attention-heavy models; convolutions stay float "
                           "(dynamic ConvInteger has no fast x86 kernel).",
                "static": "Needs calibration data (a few hundred samples). Quantizes convolutions too: the method "
                          "for CNNs. Slower to prepare.",
                "fp16": "Halves the file. Meant for GPU targets (CUDA/TensorRT): on CPUs it is usually slower, "
                        "because most CPU kernels are fp32 and casts are inserted.",
                "torch_dynamic": "PyTorch-side INT8 Linear layers, CPU only; the model stays a PyTorch module."})
        self.per_channel = self.add_check(
            "per_channel", "Per-channel", "One scale per output channel instead of one per tensor: noticeably better "
            "accuracy for convolutions, slightly larger files and not supported by some older runtimes.",
            text="Per-channel weight scales")
        self.calibration = self.add_choice(
            "calibration", "Calibration", "How static INT8 picks activation ranges. MinMax is fast but sensitive to "
            "outliers; Entropy (KL) and Percentile clip rare outliers for better resolution, at longer calibration.",
            labels={"minmax": "MinMax", "entropy": "Entropy (KL)", "percentile": "Percentile"})
        self.samples = self.add_spin(
            "calibration_samples", "Calibration samples", "Training samples (seen through the eval transforms) used "
            "to calibrate static INT8. More gives steadier ranges and slower calibration; a few hundred is usually "
            "enough.", suffix=" samples")
        self.add_check("preprocess", "Pre-process", "Run shape inference and onnxruntime's basic graph "
                       "optimizations before quantizing, so Q/DQ pairs are not placed around ops that would be "
                       "folded away. Costs a few seconds; rarely worth turning off.",
                       text="Optimize graph first")
        self.add_double("max_accuracy_drop", "Max accuracy drop", "Accuracy-aware mode: if the quantized model "
                        "loses more than this many points, the layers that add the most error are kept in float "
                        "until it fits. Protects accuracy at the cost of speed; 0 turns it off.", decimals=2,
                        step=0.25, suffix=" pts", special="off")
        self.add_parsed_text("exclude", "Keep in float", "PyTorch module names (as in the model's layer list) that "
                             "stay float: typically the first conv and the classifier, which are most sensitive to "
                             "8-bit rounding. Each excluded layer costs some speed.", parse_module_names,
                             format_module_names, placeholder="e.g. features.0, classifier (comma-separated)")

        for combo in self.findChildren(QComboBox):  # long item labels must not widen the narrow editor column
            combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
            combo.setMinimumContentsLength(12)

    def sync_states(self) -> None:
        method = self.method.currentData()
        static = method in ("static", "auto")  # auto is static for convolutional models
        onnx_int8 = method in ("auto", "dynamic", "static")
        self.calibration.setEnabled(static)
        self.samples.setEnabled(static)
        self.per_channel.setEnabled(onnx_int8)
        for name in ("exclude", "max_accuracy_drop", "preprocess"):
            self.widget(name).setEnabled(onnx_int8)
