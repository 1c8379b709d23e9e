"""The base of every recipe panel: one panel edits one recipe section, through declared fields.

A panel declares its controls with ``add_spin``, ``add_choice``, ``add_check``, ... naming the
section field each control edits. The base then knows how to ``load`` a recipe into the controls,
read them back (``values`` / ``apply``), show a validation message next to a control
(``show_error``) and emit ``changed`` when the user edits anything. Limits and choices come from
the pydantic section model, so a panel cannot drift from the recipe schema.

Optional sections (prune, distill, quantize, export) are ``None`` in the recipe when off: set
``optional = True`` and the base adds an "Enable" checkbox that greys out the controls and makes
``values`` return ``None``.
"""

from __future__ import annotations

import json
import math
import re
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from workbench.recipe import Recipe

if typing.TYPE_CHECKING:
    from workbench.gui.jobs import JobManager

ERROR_STYLE = "color: #b3261e;"
INVALID_STYLE = "border: 1px solid #b3261e; border-radius: 2px;"


class PanelHost(Protocol):
    """What a panel may ask of the window that holds it (kept small so panels stay testable)."""

    jobs: JobManager

    def current_recipe(self) -> Recipe | None:
        """The recipe built from all panels, or None while it does not validate."""

    def last_folder(self, kind: str) -> str: ...

    def remember_folder(self, kind: str, path: str) -> None: ...

    def log(self, message: str, level: str = "info") -> None: ...


class FieldErrors(Exception):  # noqa: N818 - carries several field messages, not a single failure
    """Controls whose text could not be parsed: ``{field: message}`` (field is the section field)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


@dataclass
class FieldBinding:
    """One section field bound to one control (plus its row label and its error label)."""

    name: str
    widget: QWidget
    getter: Callable[[], Any]
    setter: Callable[[Any], None]
    label: QLabel
    error_label: QLabel
    form: QFormLayout
    container: QWidget


def _limits(info: Any, integer: bool) -> tuple[float | None, float | None]:
    lo = hi = None
    for m in getattr(info, "metadata", []):
        if isinstance(m, Ge):
            lo = float(m.ge)
        elif isinstance(m, Gt):
            lo = float(m.gt) + (1 if integer else 0.0)
        elif isinstance(m, Le):
            hi = float(m.le)
        elif isinstance(m, Lt):
            hi = float(m.lt) - (1 if integer else 0.0)
    return lo, hi


def literal_choices(model: type[BaseModel], name: str) -> list[Any]:
    """The allowed values of a ``Literal[...]`` field (or of the Literal inside a list)."""
    ann = model.model_fields[name].annotation
    args = typing.get_args(ann)
    if typing.get_origin(ann) is list and args:
        args = typing.get_args(args[0])
    return list(args)


def parse_int_list(text: str, what: str = "numbers") -> list[int]:
    """'1, 8, 64' -> [1, 8, 64]; a clear ValueError otherwise."""
    parts = [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]
    try:
        return [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"expected comma-separated whole {what}, e.g. 1, 8, 64") from None


class RecipePanel(QWidget):
    """Base class: subclasses set ``section_name``/``title``/``description`` and declare fields in ``build``.

    ``changed`` fires after any user edit (not while ``load`` fills the controls).
    """

    section_name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    optional: ClassVar[bool] = False

    changed = Signal()

    def __init__(self, host: PanelHost | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.host = host
        self.setObjectName(f"panel_{self.section_name}")
        self.fields: dict[str, FieldBinding] = {}
        self._loading = False
        self._errors: dict[str, str] = {}
        outer = QVBoxLayout(self)
        outer.setContentsMargins(8, 8, 8, 8)
        outer.setSpacing(8)
        heading = QLabel(f"<h3 style='margin:0'>{self.title}</h3>")
        outer.addWidget(heading)
        if self.description:
            desc = QLabel(self.description)
            desc.setWordWrap(True)
            desc.setStyleSheet("color: #555;")
            outer.addWidget(desc)
        self.enabled_check: QCheckBox | None = None
        if self.optional:
            self.enabled_check = QCheckBox(f"Enable {self.title.lower()}")
            self.enabled_check.setObjectName(f"{self.section_name}_enabled")
            self.enabled_check.setToolTip(f"Off: the recipe has no [{self.section_name}] section and the "
                                          "technique is skipped.")
            self.enabled_check.toggled.connect(self._on_enabled_toggled)
            outer.addWidget(self.enabled_check)
        self.body = QWidget()
        self.body_layout = QVBoxLayout(self.body)
        self.body_layout.setContentsMargins(0, 0, 0, 0)
        self.body_layout.setSpacing(10)
        outer.addWidget(self.body)
        self._form = self._new_form(self.body_layout)
        self.build()
        outer.addStretch(1)
        if self.optional:
            self.body.setEnabled(False)

    # -- to override ---------------------------------------------------------------------------
    def build(self) -> None:
        """Declare the controls (``add_*`` calls)."""

    def on_recipe_validated(self, recipe: Recipe) -> None:
        """The whole recipe validated after an edit or a load: start derived work (summaries)."""

    def on_recipe_invalid(self) -> None:
        """The recipe stopped validating: mark derived views (summaries) as out of date."""

    def sync_states(self) -> None:
        """Controls were loaded or edited: update visibility and enabled states that depend on them."""

    def shutdown(self) -> None:
        """Stop the panel's timers (the window's single shutdown path calls this)."""

    def set_busy(self, busy: bool) -> None:
        """An exclusive job (run, benchmark, search) started or ended: disable buttons that start one."""

    # -- schema ------------------------------------------------------------------------------------
    @classmethod
    def section_model(cls) -> type[BaseModel]:
        ann = Recipe.model_fields[cls.section_name].annotation
        for a in (ann, *typing.get_args(ann)):
            if isinstance(a, type) and issubclass(a, BaseModel):
                return a
        raise TypeError(f"recipe field {cls.section_name!r} is not a section")

    def _info(self, name: str) -> Any:
        return self.section_model().model_fields[name]

    def _default(self, name: str) -> Any:
        return self.section_model()().__getattribute__(name)

    # -- layout helpers ----------------------------------------------------------------------------
    def _new_form(self, parent_layout: QVBoxLayout) -> QFormLayout:
        holder = QWidget()
        form = QFormLayout(holder)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        parent_layout.addWidget(holder)
        return form

    def begin_group(self, title: str, tooltip: str = "") -> QGroupBox:
        """Following ``add_*`` calls go into a titled box."""
        box = QGroupBox(title)
        if tooltip:
            box.setToolTip(tooltip)
        lay = QVBoxLayout(box)
        lay.setContentsMargins(8, 6, 8, 8)
        self._form = self._new_form(lay)
        self.body_layout.addWidget(box)
        return box

    def add_widget(self, widget: QWidget) -> None:
        """A free widget (button, summary table) spanning the current form's width."""
        self._form.addRow(widget)

    def _bind(self, name: str, label: str, tooltip: str, widget: QWidget, getter: Callable[[], Any],
              setter: Callable[[Any], None], signal: Any, extra: QWidget | None = None) -> FieldBinding:
        widget.setObjectName(f"{self.section_name}_{name}")
        widget.setToolTip(tooltip)
        lab = QLabel(label)
        lab.setToolTip(tooltip)
        lab.setBuddy(widget)
        err = QLabel()
        err.setObjectName(f"{self.section_name}_{name}_error")
        err.setWordWrap(True)
        err.setStyleSheet(ERROR_STYLE)
        err.setVisible(False)
        container = QWidget()
        col = QVBoxLayout(container)
        col.setContentsMargins(0, 0, 0, 0)
        col.setSpacing(2)
        if extra is None:
            col.addWidget(widget)
        else:
            row = QHBoxLayout()
            row.setContentsMargins(0, 0, 0, 0)
            row.addWidget(widget, 1)
            row.addWidget(extra)
            col.addLayout(row)
        col.addWidget(err)
        self._form.addRow(lab, container)
        b = FieldBinding(name, widget, getter, setter, lab, err, self._form, container)
        self.fields[name] = b
        signal.connect(self._emit_changed)
        return b

    # -- control factories ---------------------------------------------------------------------------
    def add_spin(self, name: str, label: str, tooltip: str, *, minimum: int | None = None,
                 maximum: int | None = None, step: int = 1, suffix: str = "", special: str = "") -> QSpinBox:
        lo, hi = _limits(self._info(name), integer=True)
        w = QSpinBox()
        w.setRange(int(minimum if minimum is not None else (lo if lo is not None else 0)),
                   int(maximum if maximum is not None else (hi if hi is not None else 2**31 - 1)))
        w.setSingleStep(step)
        w.setSuffix(suffix)
        w.setKeyboardTracking(False)
        if special:
            w.setSpecialValueText(special)
        self._bind(name, label, tooltip, w, w.value, lambda v: w.setValue(int(v)), w.valueChanged)
        return w

    def add_double(self, name: str, label: str, tooltip: str, *, decimals: int = 2, step: float = 0.05,
                   minimum: float | None = None, maximum: float | None = None, suffix: str = "",
                   special: str = "") -> QDoubleSpinBox:
        lo, hi = _limits(self._info(name), integer=False)
        w = QDoubleSpinBox()
        w.setDecimals(decimals)
        eps = 10.0 ** -decimals
        info_lo = lo + eps if lo is not None and any(isinstance(m, Gt) for m in self._info(name).metadata) else lo
        info_hi = hi - eps if hi is not None and any(isinstance(m, Lt) for m in self._info(name).metadata) else hi
        w.setRange(minimum if minimum is not None else (info_lo if info_lo is not None else 0.0),
                   maximum if maximum is not None else (info_hi if info_hi is not None else 1e9))
        w.setSingleStep(step)
        w.setSuffix(suffix)
        w.setKeyboardTracking(False)
        if special:
            w.setSpecialValueText(special)
        self._bind(name, label, tooltip, w, w.value, lambda v: w.setValue(float(v)), w.valueChanged)
        return w

    def add_float_text(self, name: str, label: str, tooltip: str) -> QLineEdit:
        """A float typed as text (learning rates read better as 3e-3 than in a spin box)."""
        w = QLineEdit()

        def get() -> float:
            text = w.text().strip()
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"{text!r} is not a number (e.g. 0.003 or 3e-3)") from None
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
            return value

        self._bind(name, label, tooltip, w, get, lambda v: w.setText(f"{float(v):g}"), w.textEdited)
        return w

    def add_check(self, name: str, label: str, tooltip: str, text: str = "") -> QCheckBox:
        w = QCheckBox(text)
        self._bind(name, label, tooltip, w, w.isChecked, lambda v: w.setChecked(bool(v)), w.toggled)
        return w

    def add_choice(self, name: str, label: str, tooltip: str, labels: dict[Any, str] | None = None,
                   item_tips: dict[Any, str] | None = None) -> QComboBox:
        w = QComboBox()
        for value in literal_choices(self.section_model(), name):
            w.addItem((labels or {}).get(value, str(value)), value)
            if item_tips and value in item_tips:
                w.setItemData(w.count() - 1, item_tips[value], Qt.ItemDataRole.ToolTipRole)

        def set_value(v: Any) -> None:
            i = w.findData(v)
            if i < 0:  # a value this build does not list: keep it visible rather than lose it
                w.addItem(str(v), v)
                i = w.count() - 1
            w.setCurrentIndex(i)

        self._bind(name, label, tooltip, w, w.currentData, set_value, w.currentIndexChanged)
        return w

    def add_text(self, name: str, label: str, tooltip: str, placeholder: str = "") -> QLineEdit:
        w = QLineEdit()
        w.setPlaceholderText(placeholder)
        self._bind(name, label, tooltip, w, lambda: w.text().strip(), lambda v: w.setText(str(v)), w.textEdited)
        return w

    def add_parsed_text(self, name: str, label: str, tooltip: str, parse: Callable[[str], Any],
                        format_value: Callable[[Any], str], placeholder: str = "") -> QLineEdit:
        """Text that must be parsed (lists, JSON); a parse error is shown next to the control."""
        w = QLineEdit()
        w.setPlaceholderText(placeholder)
        self._bind(name, label, tooltip, w, lambda: parse(w.text()), lambda v: w.setText(format_value(v)),
                   w.textEdited)
        return w

    def add_json(self, name: str, label: str, tooltip: str, placeholder: str = '{"depth": 6}') -> QLineEdit:
        def parse(text: str) -> dict[str, Any]:
            text = text.strip() or "{}"
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"not valid JSON ({exc.msg}); write e.g. {placeholder}") from None
            if not isinstance(value, dict):
                raise ValueError(f"must be a JSON object, e.g. {placeholder}")
            return value

        return self.add_parsed_text(name, label, tooltip, parse,
                                    lambda v: json.dumps(v) if v else "", placeholder)

    def add_path(self, name: str, label: str, tooltip: str, *, mode: Callable[[], str] | str = "file",
                 file_filter: Callable[[], str] | str = "All files (*)", placeholder: str = "") -> QLineEdit:
        """A path line edit with a browse button; ``mode`` is 'file', 'dir' or 'save' (or a callable)."""
        w = QLineEdit()
        w.setPlaceholderText(placeholder)
        browse = QToolButton()
        browse.setText("…")
        browse.setObjectName(f"{self.section_name}_{name}_browse")
        browse.setToolTip("Browse")

        def pick() -> None:
            m = mode() if callable(mode) else mode
            flt = file_filter() if callable(file_filter) else file_filter
            kind = f"{self.section_name}.{name}"
            start = w.text().strip() or (self.host.last_folder(kind) if self.host else "")
            if m == "dir":
                path = QFileDialog.getExistingDirectory(self, label, start)
            else:
                path, _ = QFileDialog.getOpenFileName(self, label, start, flt)
            if path:
                w.setText(path)
                if self.host is not None:
                    self.host.remember_folder(kind, str(Path(path).parent if m != "dir" else path))
                self._emit_changed()

        browse.clicked.connect(pick)
        self._bind(name, label, tooltip, w, lambda: w.text().strip(), lambda v: w.setText(str(v)), w.textEdited,
                   extra=browse)
        return w

    # -- state -------------------------------------------------------------------------------------------
    def _emit_changed(self, *_args: object) -> None:
        if not self._loading:
            self.sync_states()  # keep dependent visibility in sync with the edit
            self.changed.emit()

    def _on_enabled_toggled(self, on: bool) -> None:
        self.body.setEnabled(on)
        self._emit_changed()

    def set_row_visible(self, name: str, visible: bool) -> None:
        b = self.fields[name]
        b.form.setRowVisible(b.container, visible)

    def widget(self, name: str) -> QWidget:
        return self.fields[name].widget

    def is_section_enabled(self) -> bool:
        return self.enabled_check is None or self.enabled_check.isChecked()

    def load(self, recipe: Recipe) -> None:
        """Fill the controls from ``recipe`` (defaults when an optional section is off)."""
        section = getattr(recipe, self.section_name)
        self._loading = True
        try:
            if self.enabled_check is not None:
                self.enabled_check.setChecked(section is not None)
                self.body.setEnabled(section is not None)
            if section is None:
                section = self.section_model()()
            for name, b in self.fields.items():
                b.setter(getattr(section, name))
            self.clear_errors()
            self.sync_states()
        finally:
            self._loading = False

    def values(self) -> dict[str, Any] | None:
        """The section as a plain dict (None for a disabled optional section).

        Raises ``FieldErrors`` for controls whose text cannot be parsed; range and cross-field
        checks are left to the recipe model so every message comes from one place.
        """
        if not self.is_section_enabled():
            return None
        out: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name, b in self.fields.items():
            try:
                out[name] = b.getter()
            except ValueError as exc:
                errors[name] = str(exc)
        if errors:
            raise FieldErrors(errors)
        return out

    def apply(self, recipe: Recipe) -> None:
        """Write the controls into ``recipe``'s section (validated); raises on bad values."""
        values = self.values()
        setattr(recipe, self.section_name, None if values is None else self.section_model()(**values))

    # -- validation messages --------------------------------------------------------------------------
    def show_error(self, field: str, message: str) -> bool:
        """Show ``message`` under the control of ``field``; False if this panel has no such control."""
        b = self.fields.get(field)
        if b is None:
            return False
        self._errors[field] = message
        b.error_label.setText(message)
        b.error_label.setVisible(True)
        b.widget.setStyleSheet(INVALID_STYLE if isinstance(b.widget, QLineEdit) else "")
        b.label.setStyleSheet(ERROR_STYLE)
        return True

    def clear_errors(self) -> None:
        for name in list(self._errors):
            b = self.fields[name]
            b.error_label.clear()
            b.error_label.setVisible(False)
            b.widget.setStyleSheet("")
            b.label.setStyleSheet("")
        self._errors.clear()

    def errors(self) -> dict[str, str]:
        """Messages currently shown, by field."""
        return dict(self._errors)


_MODULE_NAME = re.compile(r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


def parse_module_names(text: str) -> list[str]:
    """'features.0, classifier' -> ['features.0', 'classifier'] (PyTorch module names, as named_modules gives them).

    A clear ValueError for anything that cannot be a module name, so a typo is flagged at the
    control instead of silently matching nothing.
    """
    names = [p.strip() for p in text.replace(";", ",").replace("\n", ",").split(",") if p.strip()]
    bad = [n for n in names if not _MODULE_NAME.match(n)]
    if bad:
        raise ValueError(f"{bad[0]!r} is not a module name; write dotted names from the model's layer list, "
                         "e.g. features.0, classifier")
    return names


def format_module_names(names: Sequence[str]) -> str:
    return ", ".join(names)
