"""A PyTorch model with a multi-argument forward(input_ids, attention_mask) through `workbench run` on token data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from workbench.cli import main

MODEL_PY = '''
import torch
from torch import nn


class TinyBertClassifier(nn.Module):
    """BERT-style: embeddings, one self-attention encoder layer, masked mean pooling, a classifier."""

    def __init__(self, num_classes: int = 2, vocab: int = 60, hidden: int = 32) -> None:
        super().__init__()
        self.word = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(64, hidden)
        self.attn = nn.MultiheadAttention(hidden, 4, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.head = nn.Linear(hidden, num_classes)
        self.seen = []  # (dtype, min id, max id, mask values) of each call, for the test

    def forward(self, input_ids, attention_mask):
        if not torch.compiler.is_compiling() and not torch.jit.is_tracing():
            self.seen.append((input_ids.dtype, int(input_ids.min()), int(input_ids.max()),
                              sorted(set(attention_mask.flatten().tolist()))))
        pos = torch.arange(input_ids.shape[1]).unsqueeze(0)
        x = self.word(input_ids) + self.position(pos)
        y, _ = self.attn(x, x, x, key_padding_mask=attention_mask == 0, need_weights=False)
        x = self.norm(x + y)
        m = attention_mask.unsqueeze(-1).to(x.dtype)
        return self.head((x * m).sum(1) / m.sum(1).clamp(min=1.0))
'''


def _tokens(path: Path, n: int = 96, seq: int = 12, vocab: int = 60) -> Path:
    """Two learnable classes: class 1 sentences contain id 7, class 0 ones do not; variable lengths."""
    rng = np.random.default_rng(0)
    ids = np.zeros((n, seq), np.int64)
    mask = np.zeros((n, seq), np.int64)
    labels = np.arange(n) % 2
    for i in range(n):
        k = int(rng.integers(3, seq + 1))
        ids[i, :k] = rng.integers(8, vocab, k)
        if labels[i]:
            ids[i, int(rng.integers(0, k))] = 7
        mask[i, :k] = 1
    np.savez(path, input_ids=ids, attention_mask=mask, token_type_ids=np.zeros_like(ids), labels=labels)
    return path


def _recipe(tmp_path: Path, extra: str = "") -> Path:
    (tmp_path / "tiny_bert.py").write_text(MODEL_PY)
    _tokens(tmp_path / "tokens.npz")
    r = tmp_path / "r.toml"
    r.write_text(f'''version = 1
name = "tokens"
[model]
source = "python"
path = "{tmp_path / 'tiny_bert.py'}"
class_name = "TinyBertClassifier"
[data]
source = "npz"
path = "{tmp_path / 'tokens.npz'}"
[train]
epochs = 6
lr = 0.01
[batching]
batch_size = 16
[loader]
num_workers = 0
[bench]
batch_sizes = [1, 8]
iters = 5
max_time_s = 1.0
{extra}''')
    return r


def test_multi_argument_forward_trains_scores_and_times_on_token_data(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(_recipe(tmp_path)), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    s = out.get("summary", out)
    data = s["data"]
    assert data["kind"] == "tokens" and data["input_shape"] == [3, 12] and data["num_classes"] == 2
    base = s["final"]
    assert base["accuracy"] > 0.6  # learned the marker token: the named inputs reached the model intact
    assert base["latency_ms_p50"] > 0 and base["params"] > 0


def test_timing_inputs_follow_meaning(tmp_path: Path) -> None:
    import torch

    from workbench.core.models.token_inputs import wrap_for_tokens
    from workbench.errors import ModelLoadError

    ns: dict = {}
    exec(MODEL_PY, ns)
    model = ns["TinyBertClassifier"]()
    wrapped = wrap_for_tokens(model, ["input_ids", "attention_mask", "token_type_ids"])
    assert wrapped.used == ["input_ids", "attention_mask"] and wrapped.vocab == 60  # the word table, not positions
    wrapped(torch.randn(4, 3, 10))  # what timing and summaries feed: float noise of the right shape
    dtype, lo, hi, mask = model.seen[-1]
    assert dtype == torch.int64 and lo >= 1 and hi < 60 and mask == [1]
    real = torch.tensor([[[5, 9, 0], [1, 1, 0], [0, 0, 0]]])
    wrapped(real)
    assert model.seen[-1][1:] == (0, 9, [0, 1])  # real token ids pass through untouched
    with pytest.raises(ModelLoadError, match="needs attention_mask"):
        wrap_for_tokens(model, ["input_ids"], "tiny_bert.py")


def test_token_run_refuses_in_one_line_and_times_onnxruntime_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = _recipe(tmp_path, '[prune]\nratio = 0.5\n')
    r.write_text(r.read_text().replace("epochs = 6", "epochs = 0"))
    assert main(["run", str(r)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("[prune] with token data" in ln and "remove that section" in ln for ln in err), err
    r.write_text(r.read_text().replace("[prune]\nratio = 0.5", "[quantize]\nmax_accuracy_drop = 1.0"))
    assert main(["run", str(r)]) == 2
    assert "quantize.max_accuracy_drop = 1 with token data" in capsys.readouterr().err
    np.savez(tmp_path / "nolabels.npz", input_ids=np.ones((8, 4), np.int64))
    r.write_text(r.read_text().replace("tokens.npz", "nolabels.npz").replace("[quantize]\nmax_accuracy_drop = 1.0\n", ""))
    assert main(["run", str(r)]) == 2
    err = capsys.readouterr().err
    assert "nolabels.npz" in err and "'labels'" in err
    r.write_text(r.read_text().replace("nolabels.npz", "tokens.npz").replace("iters = 5", 'iters = 5\nruntimes = ["eager", "onnxruntime"]'))
    assert main(["run", str(r), "--json"]) == 0  # onnxruntime beside torch: the named-input export, timed
    base = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["final"]
    assert [st["batch_size"] for st in base["runtimes"]["onnxruntime"]] == [1, 8]


def test_token_model_is_exported_with_named_inputs_and_checked(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    import onnx

    r = _recipe(tmp_path, '[export]\nformats = ["onnx", "pt2", "safetensors"]\n')
    assert main(["run", str(r), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rec = next(st for st in s["stages"] if st["name"] == "export")
    for fmt in ("onnx", "pt2", "safetensors"):
        f = rec["formats"][fmt]
        assert f["parity_ok"] and f["parity"]["top1_agreement"] == 1.0 and f["parity"]["cosine_min"] > 0.9999, fmt
    onnx_rec = rec["formats"]["onnx"]
    assert onnx_rec["accuracy"] == pytest.approx(rec["before"]["accuracy"])  # same eval accuracy under onnxruntime
    assert s["final"]["accuracy"] == pytest.approx(rec["before"]["accuracy"]) and s["final"]["latency_ms_p50"] > 0
    # paired torch vs onnxruntime timing ran on token inputs, both models at both batch sizes
    assert set(s["speedup"]["latency"]) == {"1", "8"} and s["speedup"]["latency"]["1"]["final_ms"] > 0
    path = Path(onnx_rec["path"])
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask"]
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.INT64 for i in graph.input)
    assert all(not d.HasField("dim_value") for i in graph.input for d in i.type.tensor_type.shape.dim)  # dynamic
    # the exported file is a token model for `workbench bench` and `workbench quantize` as well
    assert main(["bench", str(path), "--batch-sizes", "2", "--iters", "3", "--seq-len", "12", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["inputs"]["input_ids"]["dtype"] == "int64"
    assert main(["quantize", str(path), "--method", "dynamic", "--seq-len", "12", "--out",
                 str(tmp_path / "q.onnx"), "--min-cosine", "0.95", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["parity_vs_float"]["cosine_min"] >= 0.95
    # the .pt2 takes the stacked int64 batch: `bench` says to use the ONNX file rather than feeding it floats
    assert main(["bench", rec["formats"]["pt2"]["path"], "--batch-sizes", "1", "--iters", "3"]) == 2
    assert "bench its ONNX export instead" in capsys.readouterr().err


def test_export_falls_back_to_the_torchscript_exporter(tmp_path: Path) -> None:
    """A data-dependent Python branch stops torch.export; the named-input file still comes out, and runs."""
    import onnx
    import torch

    from workbench.core.measure.runtimes import OrtRuntime
    from workbench.core.models.token_inputs import wrap_for_tokens

    class Branchy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(30, 8)
            self.head = torch.nn.Linear(8, 2)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            x = self.emb(input_ids)
            if int(attention_mask.sum()) > 0:  # data-dependent: torch.export refuses, tracing records one path
                x = x * attention_mask.unsqueeze(-1)
            return self.head(x.mean(1))

    wrapped = wrap_for_tokens(Branchy().eval(), ["input_ids", "attention_mask"])
    path = wrapped.export_onnx(tmp_path / "b.onnx", 6)
    assert [i.name for i in onnx.load(str(path)).graph.input] == ["input_ids", "attention_mask"]
    x = wrapped.example_input(3, 9).numpy()
    rt = OrtRuntime(path)
    got = rt.predict(x)  # a stacked [batch, inputs, seq] batch, unstacked by the file's metadata
    rt.close()
    with torch.inference_mode():
        want = wrapped(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_sweep_times_a_token_model_across_batch_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = _recipe(tmp_path)
    assert main(["sweep", str(r), "--batch-sizes", "1,4", "--no-train", "--workers", "0", "--cache", "on",
                 "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["status"] == "completed"
    sw = s["sweep"]
    assert [p["batch_size"] for p in sw["inference"]] == [1, 4] and all(p["p50_ms"] > 0 for p in sw["inference"])
    assert sw["loader"]["points"] and sw["loader"]["points"][0]["train_samples_per_s"] > 0  # trained through it


def test_length_aware_loader_cuts_each_batch_to_its_longest_member(tmp_path: Path) -> None:
    from workbench.core.data import build_loader, load_dataset
    from workbench.recipe import DataSection, LoaderSection

    bundle = load_dataset(DataSection(source="npz", path=str(_tokens(tmp_path / "t.npz")), eval_fraction=0.3))
    ds = bundle.train
    lengths = ds.lengths()
    assert lengths.min() >= 3 and lengths.max() <= 12
    plain = list(build_loader(ds, 8, LoaderSection(), train=False))
    aware = list(build_loader(ds, 8, LoaderSection(), train=False, length_aware=True))
    assert all(x.shape[-1] == 12 for x, _ in plain)
    widths = [x.shape[-1] for x, _ in aware]
    assert widths == sorted(widths) and sum(widths) < 0.8 * sum(x.shape[-1] for x, _ in plain)
    seen = np.concatenate([x[:, 0].numpy().sum(1) for x, _ in aware])  # per-sample id sums survive the cut
    assert sorted(seen.tolist()) == sorted(ds.tokens[:, 0].sum(1).tolist())
    for x, _ in aware:  # each batch is as long as its longest sample's mask
        assert int(x[:, 1].sum(1).max()) == x.shape[-1]
    train1 = [y.tolist() for _, y in build_loader(ds, 8, LoaderSection(), train=True, seed=3, length_aware=True)]
    train2 = [y.tolist() for _, y in build_loader(ds, 8, LoaderSection(), train=True, seed=3, length_aware=True)]
    assert train1 == train2 and len(train1) == len(ds) // 8  # seeded, drop_last as configured


def test_length_aware_run_trains_and_scores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = _recipe(tmp_path)
    r.write_text(r.read_text().replace("batch_size = 16", "batch_size = 16\nlength_aware = true"))
    assert main(["run", str(r), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert s["final"]["accuracy"] > 0.6 and s["train"]["train_samples_per_s"] > 0


@pytest.mark.parametrize("method", ["dynamic", "static"])
def test_token_model_is_quantized_in_a_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str) -> None:
    r = _recipe(tmp_path, f'[quantize]\nmethod = "{method}"\ncalibration_samples = 32\n')
    assert main(["run", str(r), "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rec = next(st for st in s["stages"] if st["name"] == "quantize")
    # two logits per sample: cosine is harsh near the decision boundary, so the mean and top-1 carry the check
    assert rec["parity"]["cosine_mean"] > 0.98 and rec["parity"]["top1_agreement"] >= 0.9
    assert rec["after"]["accuracy"] >= rec["before"]["accuracy"] - 0.1 and rec["size_ratio"] < 1.0
    assert set(s["speedup"]["latency"]) == {"1", "8"}  # torch → onnxruntime fp32 → INT8, paired on token inputs


def test_multi_input_onnx_in_a_recipe_points_to_bench_and_quantize(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from tests.token_models import export_tiny_bert

    model = export_tiny_bert(tmp_path / "bert.onnx")
    r = _recipe(tmp_path)
    text = r.read_text().replace('source = "python"', 'source = "onnx"').replace(str(tmp_path / "tiny_bert.py"),
                                                                                  str(model))
    r.write_text(text.replace('class_name = "TinyBertClassifier"\n', "").replace("epochs = 6", "epochs = 0"))
    assert main(["run", str(r)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("bert.onnx" in ln and "3 inputs" in ln and "workbench quantize" in ln for ln in err), err


def test_a_run_says_when_max_time_cut_its_iterations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = _recipe(tmp_path)
    r.write_text(r.read_text().replace("epochs = 6", "epochs = 0").replace("iters = 5", "iters = 100000")
                 .replace("max_time_s = 1.0", "max_time_s = 0.05"))
    assert main(["run", str(r), "--json"]) == 0
    out = capsys.readouterr()
    cut = json.loads(out.out.strip().splitlines()[-1])["final"]["iters_cut"]
    assert set(cut) == {"1", "8"} and all(3 <= n < 100000 for n in cut.values())
    assert "bench.iters = 100000 cut by bench.max_time_s = 0.05 s" in out.err
