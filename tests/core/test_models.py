"""Model zoo, loaders (every source, every kind of bad file) and summaries. Fast: no training."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from workbench.core.models import (
    ZOO,
    LoadedModel,
    build_zoo_model,
    check_model_data_compat,
    load_model,
    load_weights,
    save_weights,
    summarize,
    summarize_onnx,
)
from workbench.errors import ModelLoadError
from workbench.recipe import ModelSection

IMAGE_SHAPES = [(3, 32, 32), (1, 28, 28)]

# the tests create TorchScript files on purpose; torch 2.9+ deprecates the API that writes them
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


# ------------------------------------------------------------------------------------------
# zoo
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", IMAGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_builds_and_outputs_logits(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = build_zoo_model(name, 7, shape)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, *shape))
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()
    assert model.__doc__  # every model says which design idea it shows


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_feature_vector_models(name: str) -> None:
    model = build_zoo_model(name, 3, (20,)).eval()
    assert model(torch.randn(4, 20)).shape == (4, 3)


def test_mlp_takes_any_shape() -> None:
    model = build_zoo_model("mlp", 5, (2, 3, 4, 5)).eval()
    assert model(torch.randn(2, 2, 3, 4, 5)).shape == (2, 5)


def test_transformer_token_count_is_small() -> None:
    model = build_zoo_model("transformer", 10, (3, 32, 32))
    assert model.pos_embed.shape[1] == 64  # 4x4 patches on 32x32
    model = build_zoo_model("transformer", 10, (1, 28, 28))
    assert model.pos_embed.shape[1] == 49


def test_training_step_on_zoo_model() -> None:
    model = build_zoo_model("small_cnn", 10, (3, 32, 32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    assert 100_000 <= sum(p.numel() for p in model.parameters()) <= 300_000


@pytest.mark.parametrize("name", sorted(ZOO))
def test_width_multiplier_changes_params(name: str) -> None:
    shape = (3, 32, 32)
    counts = [
        sum(p.numel() for p in build_zoo_model(name, 10, shape, width=w).parameters())
        for w in (0.5, 1.0, 2.0)
    ]
    assert counts[0] < counts[1] < counts[2]


def test_width_keeps_channels_multiple_of_8() -> None:
    model = build_zoo_model("resnet", 10, (3, 32, 32), width=0.3)
    for m in model.modules():
        if isinstance(m, nn.Conv2d) and m.in_channels != 3:
            assert m.out_channels % 8 == 0 and m.out_channels >= 8


def test_zoo_kwargs_are_passed() -> None:
    model = build_zoo_model("transformer", 10, (3, 32, 32), depth=2, dim=64)
    assert len(model.blocks) == 2
    assert model.pos_embed.shape[-1] == 64


def test_mobilenet_uses_depthwise_and_residuals() -> None:
    from workbench.core.models.zoo import InvertedResidual

    model = build_zoo_model("mobilenet", 10, (3, 32, 32))
    depthwise = [
        m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels
    ]
    blocks = [m for m in model.modules() if isinstance(m, InvertedResidual)]
    assert depthwise and any(b.use_residual for b in blocks)
    assert all(isinstance(a, nn.ReLU6) for a in model.modules() if isinstance(a, nn.ReLU | nn.ReLU6))


@pytest.mark.parametrize(
    ("name", "shape", "kwargs", "needle"),
    [
        ("vgg", (3, 32, 32), {}, "unknown zoo model 'vgg'; choose one of: mlp"),
        ("small_cnn", (20,), {}, "needs image input (C, H, W) but data gives [20]"),
        ("resnet", (3, 4, 4), {}, "at least 8x8"),
        ("transformer", (2, 3, 4, 5), {}, "takes images (C, H, W) or feature vectors (F,)"),
        ("small_cnn", (3, 32, 32), {"bogus": 1}, "does not accept kwargs ['bogus']"),
    ],
)
def test_zoo_errors_are_one_line(name: str, shape: tuple[int, ...], kwargs: dict, needle: str) -> None:
    with pytest.raises(ModelLoadError) as info:
        build_zoo_model(name, 10, shape, **kwargs)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------------
# summary
# ------------------------------------------------------------------------------------------


def _conv_linear_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """Hand count: Conv MACs = out_elems * (cin/groups) * k*k, Linear MACs = in * out."""
    total = 0

    def hook(m: nn.Module, _inp: object, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            k = m.kernel_size[0] * m.kernel_size[1]
            total += out.numel() * (m.in_channels // m.groups) * k
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *shape))
    for h in handles:
        h.remove()
    return total


def test_summary_of_tiny_conv_net_is_exact() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),  # 8*8*8 outputs * 3*9 = 13824 MACs
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 4),  # 32 MACs
    )
    s = summarize(net, (3, 8, 8))
    assert s.macs == 13824 + 32
    assert s.flops == 2 * s.macs
    assert s.params == (3 * 8 * 9 + 8) + (8 + 8) + (8 * 4 + 4)
    assert s.size_bytes == s.params * 4 + 8 * 4 * 2 + 8  # + BN running mean/var + int64 counter
    rows = {r.name: r for r in s.layers}
    assert rows["0"].macs == 13824 and rows["0"].output_shape == (1, 8, 8, 8) and rows["0"].type == "Conv2d"
    assert rows["5"].macs == 32 and rows["5"].params == 36
    assert sum(r.macs for r in s.layers) == s.macs


@pytest.mark.parametrize("name", ["small_cnn", "resnet", "mobilenet", "mlp"])
def test_summary_matches_hand_count(name: str) -> None:
    shape = (3, 32, 32)
    model = build_zoo_model(name, 10, shape)
    model.train()
    s = summarize(model, shape)
    assert model.training  # mode restored
    assert s.params == sum(p.numel() for p in model.parameters()) == s.trainable_params
    assert s.macs == _conv_linear_macs(model, shape)
    assert s.macs > 0 and s.size_bytes > s.params * 4
    json.dumps(s.to_dict())


def test_summary_of_small_cnn_by_formula() -> None:
    s = summarize(build_zoo_model("small_cnn", 10, (3, 32, 32)), (3, 32, 32))
    hand = (
        32 * 32 * 32 * 3 * 9 + 16 * 16 * 64 * 32 * 9 + 8 * 8 * 128 * 64 * 9 + 8 * 8 * 128 * 128 * 9 + 128 * 10
    )
    assert abs(s.macs - hand) <= 0.1 * hand


def test_summary_counts_attention() -> None:
    shape = (3, 32, 32)
    model = build_zoo_model("transformer", 10, shape)
    s = summarize(model, shape)
    dim, tokens, depth, ff = 128, 64, 4, 256
    per_block = (
        tokens * dim * 3 * dim + tokens * dim * dim + 2 * tokens * tokens * dim + 2 * tokens * dim * ff
    )
    expected = tokens * 3 * 16 * dim + depth * per_block + dim * 10
    assert s.macs == expected
    assert any(r.type == "MultiheadAttention" and r.macs for r in s.layers)


# ------------------------------------------------------------------------------------------
# loaders: every source from a real file
# ------------------------------------------------------------------------------------------

NET_PY = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden: int = 16, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, hidden, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))
"""

SHAPE = (3, 8, 8)


class TinyNet(nn.Module):
    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def _write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def _err(fn, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(ModelLoadError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def test_zoo_source() -> None:
    loaded = load_model(ModelSection(zoo="resnet", width=0.5), 10, (3, 32, 32))
    assert loaded.kind == "zoo" and loaded.trainable and loaded.num_classes == 10
    check_model_data_compat(loaded, 10, (3, 32, 32))


def test_python_source_with_kwargs(tmp_path: Path) -> None:
    path = _write(tmp_path / "model.py", NET_PY)
    section = ModelSection(source="python", path=str(path), class_name="Net", kwargs={"hidden": 24})
    loaded = load_model(section, 5, SHAPE)
    assert loaded.kind == "python" and loaded.trainable
    assert loaded.module.conv.out_channels == 24
    assert loaded.module.fc.out_features == 5  # num_classes passed from the data
    check_model_data_compat(loaded, 5, SHAPE)


def test_python_source_picks_the_only_class_and_names_do_not_clash(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    p1 = _write(tmp_path / "a" / "model.py", NET_PY)
    p2 = _write(tmp_path / "b" / "model.py", NET_PY.replace("hidden: int = 16", "hidden: int = 8"))
    m1 = load_model(ModelSection(source="python", path=str(p1)), 3, SHAPE).module
    m2 = load_model(ModelSection(source="python", path=str(p2)), 3, SHAPE).module
    assert m1.conv.out_channels == 16 and m2.conv.out_channels == 8


def test_python_source_errors(tmp_path: Path) -> None:
    two = _write(tmp_path / "two.py", NET_PY + "\n\nclass Other(nn.Module):\n    pass\n")
    msg = _err(load_model, ModelSection(source="python", path=str(two)), 3, SHAPE)
    assert "set model.class_name" in msg and "Net, Other" in msg

    good = _write(tmp_path / "good.py", NET_PY)
    msg = _err(load_model, ModelSection(source="python", path=str(good), class_name="Missing"), 3, SHAPE)
    assert "no class or factory 'Missing'" in msg and "Net" in msg and "good.py" in msg

    msg = _err(load_model, ModelSection(source="python", path=str(good), kwargs={"bogus": 1}), 3, SHAPE)
    assert "Net(**" in msg and "TypeError" in msg and "check model.kwargs" in msg

    bad = _write(tmp_path / "bad.py", "import torch\nclass Net(torch.nn.Module:\n    pass\n")
    msg = _err(load_model, ModelSection(source="python", path=str(bad)), 3, SHAPE)
    assert "bad.py: syntax error at line 2" in msg

    raising = _write(tmp_path / "raising.py", "import no_such_module_xyz\n")
    msg = _err(load_model, ModelSection(source="python", path=str(raising)), 3, SHAPE)
    assert "importing it failed with ModuleNotFoundError" in msg

    txt = _write(tmp_path / "model.txt", NET_PY)
    assert "expected a .py file" in _err(load_model, ModelSection(source="python", path=str(txt)), 3, SHAPE)


def test_torchscript_source_is_trainable(tmp_path: Path) -> None:
    path = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(TinyNet()), str(path))
    loaded = load_model(ModelSection(source="torchscript", path=str(path)), 4, SHAPE)
    assert loaded.kind == "torchscript" and loaded.trainable
    check_model_data_compat(loaded, 4, SHAPE)
    module = loaded.module
    before = module.fc.weight.detach().clone()
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    module(torch.randn(2, *SHAPE)).sum().backward()
    opt.step()
    assert not torch.equal(before, module.fc.weight)
    s = summarize(module, SHAPE)  # totals work even though ScriptModules take no hooks
    assert s.macs == 8 * 8 * 8 * 27 + 32 and s.params == sum(p.numel() for p in TinyNet().parameters())


def test_export_source_is_not_trainable(tmp_path: Path) -> None:
    path = tmp_path / "net.pt2"
    torch.manual_seed(0)
    net = TinyNet().eval()
    x = torch.randn(2, *SHAPE)
    dynamic = ({0: torch.export.Dim("batch")},)
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=dynamic), str(path))
    loaded = load_model(ModelSection(source="export", path=str(path)), 4, SHAPE)
    assert loaded.kind == "export" and not loaded.trainable
    torch.testing.assert_close(loaded.module(x), net(x))
    check_model_data_compat(loaded, 4, SHAPE)
    loaded.module.train()  # torch's .module() makes this raise; the rest of the engine calls it freely
    loaded.module.eval()
    assert summarize(loaded.module, SHAPE).macs == 8 * 8 * 8 * 27 + 32

    # with a static batch, flatten becomes view(x, [2, 8]) and the graph only takes batch 2
    flat = nn.Sequential(nn.Conv2d(3, 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    fixed = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(flat, (x,)), str(fixed))
    loaded = load_model(ModelSection(source="export", path=str(fixed)), 4, SHAPE)
    msg = _err(check_model_data_compat, loaded, 4, SHAPE)
    assert "exported with a fixed batch size" in msg and "dynamic_shapes" in msg


def test_safetensors_weights_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    src = build_zoo_model("small_cnn", 10, (3, 32, 32), width=0.25)
    src.eval()
    path = tmp_path / "w.safetensors"
    save_weights(src, path)
    loaded = load_model(ModelSection(width=0.25, weights=str(path)), 10, (3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.module.eval()(x), src(x))


def test_save_weights_handles_tied_tensors(tmp_path: Path) -> None:
    a, b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
    b.weight = a.weight
    tied = nn.Sequential(a, b)
    save_weights(tied, tmp_path / "tied.safetensors")
    fresh = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False))
    load_weights(fresh, tmp_path / "tied.safetensors")
    torch.testing.assert_close(fresh[1].weight, a.weight)


@pytest.mark.parametrize("wrap", [None, "state_dict", "model"])
def test_pt_state_dict_weights(tmp_path: Path, wrap: str | None) -> None:
    torch.manual_seed(2)
    src = build_zoo_model("mlp", 3, (20,))
    sd = src.state_dict()
    path = tmp_path / "w.pt"
    torch.save(sd if wrap is None else {wrap: sd, "epoch": 3}, path)
    loaded = load_model(ModelSection(zoo="mlp", weights=str(path)), 3, (20,))
    x = torch.randn(4, 20)
    torch.testing.assert_close(loaded.module.eval()(x), src.eval()(x))


def test_run_weights_are_left_to_the_pipeline() -> None:
    loaded = load_model(ModelSection(weights="run:12"), 10, (3, 32, 32))
    assert loaded.module is not None


def _onnx_model(classes: int = 4, batch: str | int = "N") -> onnx.ModelProto:
    """Flatten + Gemm: input [batch, 3, 2, 2] -> [batch, classes]."""
    w = helper.make_tensor(
        "W", TensorProto.FLOAT, [classes, 12], np.full(classes * 12, 0.1, np.float32).tobytes(), raw=True
    )
    b = helper.make_tensor(
        "B", TensorProto.FLOAT, [classes], np.zeros(classes, np.float32).tobytes(), raw=True
    )
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["x"], ["f"], axis=1),
            helper.make_node("Gemm", ["f", "W", "B"], ["y"], transB=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, classes])],
        initializer=[w, b],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_onnx_source(tmp_path: Path) -> None:
    path = tmp_path / "tiny.onnx"
    onnx.save(_onnx_model(), str(path))
    loaded = load_model(ModelSection(source="onnx", path=str(path)), 4, (3, 2, 2))
    assert loaded.module is None and loaded.kind == "onnx" and not loaded.trainable
    assert loaded.onnx_path == path
    assert loaded.declared_input_shape == (None, 3, 2, 2) and loaded.input_shape == (3, 2, 2)
    check_model_data_compat(loaded, 4, (3, 2, 2))
    assert "outputs 4 classes but data has 5" in _err(check_model_data_compat, loaded, 5, (3, 2, 2))
    assert "but data gives [1, 2, 2]" in _err(check_model_data_compat, loaded, 4, (1, 2, 2))
    fixed = tmp_path / "fixed.onnx"
    onnx.save(_onnx_model(batch=1), str(fixed))
    loaded = load_model(ModelSection(source="onnx", path=str(fixed)), 4, (3, 2, 2))
    assert "has a fixed batch size 1" in _err(check_model_data_compat, loaded, 4, (3, 2, 2))
    s = summarize_onnx(path)
    assert s.params == 4 * 12 + 4 and s.size_bytes == path.stat().st_size and s.macs is None
    assert [r.type for r in s.layers] == ["Flatten", "Gemm"] and s.layers[1].params == 52
    msg = _err(
        load_model, ModelSection(source="onnx", path=str(path), weights=str(tmp_path / "w.pt")), 4, (3, 2, 2)
    )
    assert "cannot be applied to an ONNX model" in msg


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_onnx_from_torch_dynamo_export(tmp_path: Path) -> None:
    path = tmp_path / "net.onnx"
    dynamic = ({0: torch.export.Dim("batch")},)
    torch.onnx.export(
        TinyNet().eval(), (torch.randn(2, *SHAPE),), str(path), dynamo=True, dynamic_shapes=dynamic
    )
    loaded = load_model(ModelSection(source="onnx", path=str(path)), 4, SHAPE)
    assert loaded.declared_input_shape is not None and loaded.declared_input_shape[0] is None
    check_model_data_compat(loaded, 4, SHAPE)
    s = summarize_onnx(path)
    assert s.params == sum(p.numel() for p in TinyNet().parameters())
    assert s.size_bytes >= path.stat().st_size


def test_onnx_external_data_inside_folder_is_fine(tmp_path: Path) -> None:
    path = tmp_path / "ext.onnx"
    onnx.save(_onnx_model(), str(path), save_as_external_data=True, location="ext.bin", size_threshold=0)
    loaded = load_model(ModelSection(source="onnx", path=str(path)), 4, (3, 2, 2))
    assert loaded.kind == "onnx"
    s = summarize_onnx(path)
    assert s.size_bytes == path.stat().st_size + (tmp_path / "ext.bin").stat().st_size


@pytest.mark.parametrize("location", ["../outside.bin", "ABSOLUTE"])
def test_onnx_external_data_escaping_the_folder_is_refused(tmp_path: Path, location: str) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"\0" * 4096)
    if location == "ABSOLUTE":
        location = str(outside)
    model = _onnx_model()
    for t in model.graph.initializer:
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        t.external_data.add(key="location", value=location)
        t.external_data.add(key="offset", value="0")
        t.external_data.add(key="length", value=str(4 * math.prod(t.dims)))
    path = folder / "evil.onnx"
    path.write_bytes(model.SerializeToString())
    msg = _err(load_model, ModelSection(source="onnx", path=str(path)), 4, (3, 2, 2))
    assert "refused" in msg and "outside the model's folder" in msg and "evil.onnx" in msg
    assert "refused" in _err(summarize_onnx, path)


# ------------------------------------------------------------------------------------------
# loaders: bad files
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["python", "torchscript", "export", "onnx"])
def test_missing_file_and_folder(tmp_path: Path, source: str) -> None:
    msg = _err(load_model, ModelSection(source=source, path=str(tmp_path / "nope.bin")), 4, SHAPE)
    assert "nope.bin" in msg and "not found" in msg
    msg = _err(load_model, ModelSection(source=source, path=str(tmp_path)), 4, SHAPE)
    assert "is a folder" in msg


def test_missing_and_folder_weights(tmp_path: Path) -> None:
    model = TinyNet()
    assert "not found" in _err(load_weights, model, tmp_path / "w.safetensors")
    assert "is a folder" in _err(load_weights, model, tmp_path)
    (tmp_path / "w.npz").write_bytes(b"abc")
    assert "unsupported weights extension '.npz'; use .safetensors, .pt or .pth" in _err(
        load_weights, model, tmp_path / "w.npz"
    )


def test_truncated_model_files(tmp_path: Path) -> None:
    net = TinyNet().eval()
    x = torch.randn(2, *SHAPE)
    ts = tmp_path / "net.ts"
    torch.jit.save(torch.jit.script(net), str(ts))
    msg = _err(load_model, ModelSection(source="torchscript", path=str(_truncate(ts))), 4, SHAPE)
    assert "net.ts: not a TorchScript archive" in msg and "torch.jit.save" in msg

    pt2 = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (x,)), str(pt2))
    msg = _err(load_model, ModelSection(source="export", path=str(_truncate(pt2))), 4, SHAPE)
    assert "net.pt2: not a torch.export archive" in msg

    on = tmp_path / "net.onnx"
    onnx.save(_onnx_model(), str(on))
    msg = _err(load_model, ModelSection(source="onnx", path=str(_truncate(on))), 4, (3, 2, 2))
    assert "net.onnx" in msg and "ONNX" in msg

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\xfe not a protobuf at all \x00\x01" * 10)
    assert "garbage.onnx" in _err(load_model, ModelSection(source="onnx", path=str(garbage)), 4, (3, 2, 2))

    sd = tmp_path / "weights.pt"
    torch.save(net.state_dict(), sd)
    msg = _err(load_model, ModelSection(source="torchscript", path=str(sd)), 4, SHAPE)
    assert "not a TorchScript archive" in msg and "model.weights" in msg


def test_truncated_weights(tmp_path: Path) -> None:
    net = TinyNet()
    st = tmp_path / "w.safetensors"
    save_weights(net, st)
    assert "w.safetensors: not a valid safetensors file" in _err(load_weights, net, _truncate(st))
    pt = tmp_path / "w.pt"
    torch.save(net.state_dict(), pt)
    assert "w.pt: not a valid PyTorch weights file" in _err(load_weights, net, _truncate(pt))
    empty = tmp_path / "e.pth"
    empty.write_bytes(b"")
    assert "file is empty" in _err(load_weights, net, empty)


class _Evil:
    """Unpickling this would create a file: proof that loading executed code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


def test_pickled_object_is_refused_and_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pt"
    torch.save({"fc.weight": torch.zeros(4, 8), "payload": _Evil(marker)}, path)
    msg = _err(load_weights, TinyNet(), path)
    assert "evil.pt: refused: not a plain weights file" in msg and "not executed" in msg
    assert not marker.exists()
    msg = _err(load_model, ModelSection(source="zoo", zoo="mlp", weights=str(path)), 4, SHAPE)
    assert "refused" in msg and not marker.exists()
    # the file really was dangerous: an unsafe load runs the payload
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_export_archive_with_pickled_payload_is_refused(tmp_path: Path) -> None:
    """torch.export.load unpickles sample inputs with weights_only=False: the loader must scan first."""
    import io
    import zipfile

    good = tmp_path / "good.pt2"
    torch.export.save(torch.export.export(nn.Linear(4, 2), (torch.zeros(2, 4),)), str(good))
    marker = tmp_path / "pwned.txt"
    payload = io.BytesIO()
    torch.save({"x": _Evil(marker)}, payload)
    evil = tmp_path / "evil.pt2"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(evil, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(
                item, payload.getvalue() if item.filename.endswith("sample_inputs/model.pt") else data
            )
    msg = _err(load_model, ModelSection(source="export", path=str(evil)), 2, (4,))
    assert "evil.pt2: refused" in msg and "not executed" in msg
    assert not marker.exists()
    load_model(ModelSection(source="export", path=str(good)), 2, (4,))  # the untouched archive is fine


def test_weights_that_do_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    save_weights(TinyNet(num_classes=10), path)
    msg = _err(load_weights, TinyNet(num_classes=4), path)
    assert "weights do not fit this model" in msg
    assert "fc.weight file [10, 8] vs model [4, 8]" in msg and "fc.bias file [10] vs model [4]" in msg

    pt = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(3)}, pt)
    msg = _err(load_weights, TinyNet(), pt)
    assert "missing in file: conv.weight" in msg and "not in model: encoder.weight" in msg

    junk = tmp_path / "junk.pt"
    torch.save({"epoch": 3, "note": "hi"}, junk)
    assert "not a state_dict" in _err(load_weights, TinyNet(), junk)


def test_weights_with_wrapper_prefix(tmp_path: Path) -> None:
    src = TinyNet()
    path = tmp_path / "ddp.pt"
    torch.save({f"module.{k}": v for k, v in src.state_dict().items()}, path)
    dst = TinyNet()
    load_weights(dst, path)
    torch.testing.assert_close(dst.fc.weight, src.fc.weight)


def test_model_data_compat_messages() -> None:
    loaded = LoadedModel(
        build_zoo_model("small_cnn", 10, (3, 32, 32)), "zoo", (3, 32, 32), 10, description="zoo:small_cnn"
    )
    check_model_data_compat(loaded, 10, (3, 32, 32))
    msg = _err(check_model_data_compat, loaded, 5, (3, 32, 32))
    assert "model zoo:small_cnn outputs 10 classes but data has 5" in msg
    msg = _err(check_model_data_compat, loaded, 10, (1, 28, 28))
    assert "expects 3 input channels" in msg and "but data gives [1, 28, 28]" in msg

    mlp = LoadedModel(build_zoo_model("mlp", 10, (20,)), "zoo", (20,), 10, description="zoo:mlp")
    msg = _err(check_model_data_compat, mlp, 10, (30,))
    assert "expects 20 input features" in msg and "but data gives [30]" in msg
    mlp.module.train()
    check_model_data_compat(mlp, 10, (20,))
    assert mlp.module.training  # mode restored
