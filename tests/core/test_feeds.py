"""Named inputs of any dtype: roles, vocabulary from the embedding table, synthetic values, cosine parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from tests.token_models import export_tiny_bert
from workbench.core.measure.feeds import (
    InputSpec,
    describe_feeds,
    feeds_batches,
    is_token_model,
    onnx_input_specs,
    onnx_max_positions,
    synthetic_feed,
)
from workbench.core.onnx_export import cosine_per_sample, parity
from workbench.techniques.quantize.child_steps import BatchCalibrationReader


def test_specs_read_dtypes_axes_vocabulary_and_positions(tmp_path: Path) -> None:
    model = onnx.load(str(export_tiny_bert(tmp_path / "b.onnx", vocab=77)))
    specs = onnx_input_specs(model)
    assert [(s.name, s.dtype, s.role) for s in specs] == [
        ("input_ids", "int64", "ids"), ("attention_mask", "int64", "mask"), ("token_type_ids", "int64", "token_type")]
    assert specs[0].dims == ("batch", "sequence") and specs[0].vocab == 77 and specs[0].vocab_source == "word.weight"
    assert specs[2].vocab == 2  # the token-type table, not the word table
    assert onnx_max_positions(model) == (64, "position.weight")
    assert is_token_model(specs)


def test_synthetic_feed_follows_each_inputs_meaning() -> None:
    specs = [InputSpec("input_ids", "int64", ("b", "s"), 30522, "emb"), InputSpec("attention_mask", "int32", ("b", "s")),
             InputSpec("token_type_ids", "int64", ("b", "s")), InputSpec("position_ids", "int64", ("b", "s")),
             InputSpec("pixel_values", "float32", ("b", 3, 4, 4))]
    feed = synthetic_feed(specs, 3, seq_len=10)
    ids = feed["input_ids"]
    assert ids.dtype == np.int64 and ids.shape == (3, 10) and ids.min() >= 1 and ids.max() < 30522
    assert len(np.unique(ids)) > 20  # spread over the vocabulary, not a handful of ids
    assert feed["attention_mask"].dtype == np.int32 and (feed["attention_mask"] == 1).all()
    assert (feed["token_type_ids"] == 0).all()
    assert (feed["position_ids"] == np.arange(10)).all()
    assert feed["pixel_values"].shape == (3, 3, 4, 4) and feed["pixel_values"].dtype == np.float32
    line = describe_feeds(specs, 10)
    assert "\n" not in line and "vocabulary 30522 from 'emb'" in line and "--seq-len 10" in line
    assert [len(b["input_ids"]) for b in feeds_batches(specs, 10, 4, 5)] == [4, 4, 2]
    assert not is_token_model([specs[-1]])
    unknown = synthetic_feed([InputSpec("ids", "int64", ("b", 6))], 2)["ids"]
    assert unknown.shape == (2, 6) and unknown.min() >= 1 and unknown.max() < 100


def test_calibration_reader_keeps_each_inputs_dtype() -> None:
    batches = [{"input_ids": np.ones((2, 4), np.int64), "attention_mask": np.ones((2, 4), np.int64)}]
    r = BatchCalibrationReader(None, batches)
    got = r.get_next()
    assert got is not None and {k: v.dtype for k, v in got.items()} == dict.fromkeys(got, np.dtype(np.int64))
    assert r.get_next() is None
    r.rewind()
    assert r.get_next() is not None
    single = BatchCalibrationReader("x", [np.zeros((2, 3), np.float64)]).get_next()
    assert single is not None and single["x"].dtype == np.float32
    with pytest.raises(ValueError):
        BatchCalibrationReader(None, [np.zeros((2, 3))])


def test_cosine_parity_for_outputs_without_labels() -> None:
    a = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = np.array([[0.0, 1.0], [2.0, 2.0], [0.0, 0.0]])
    assert cosine_per_sample(a, b) == pytest.approx([0.0, 1.0, 1.0])
    x = np.random.default_rng(0).standard_normal((4, 5, 6))
    rep = parity(lambda f: f["h"], lambda f: f["h"] * 2 + 0.01, [{"h": x}])
    assert 0.999 < rep.cosine_min <= rep.cosine_mean <= 1.0 and rep.samples == 4
    flipped = parity(lambda f: f, lambda f: -f, [x])
    assert flipped.cosine_min == pytest.approx(-1.0) and flipped.cosine_mean == pytest.approx(-1.0)


def test_token_npz_missing_mask_and_types_are_filled_and_said(tmp_path: Path) -> None:
    from workbench.core.measure.feeds import load_token_npz

    specs = [InputSpec("input_ids", "int64", ("b", "s"), 50), InputSpec("attention_mask", "int64", ("b", "s")),
             InputSpec("token_type_ids", "int64", ("b", "s"))]
    np.savez(tmp_path / "t.npz", input_ids=np.array([[3, 4, 0], [5, 0, 0]], np.int32), labels=np.array([0, 1]))
    feed, labels, notes = load_token_npz(tmp_path / "t.npz", specs)
    assert list(feed) == ["input_ids", "attention_mask", "token_type_ids"]
    assert feed["input_ids"].dtype == np.int64 and (feed["attention_mask"] == 1).all() and feed["token_type_ids"].sum() == 0
    assert labels is not None and labels.tolist() == [0, 1] and len(notes) == 2 and "all ones" in notes[0]
    feed, labels, _ = load_token_npz(tmp_path / "t.npz", specs, max_samples=1)
    assert len(feed["attention_mask"]) == 1 and labels is not None and len(labels) == 1
