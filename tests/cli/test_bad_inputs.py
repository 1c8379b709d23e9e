"""The bad-input corpus: 120+ broken or hostile inputs, each generated here and fed to ``workbench.cli.main``.

Recipes, model files, data sources, every command's arguments and output paths, and the run
store. Every case must end the same way (issue 10):

* exit code 2 and exactly ONE line on stderr, ``error: ...``, naming the file/field/value;
* no ``Traceback`` and no line longer than the CLI's cap (long values are cut);
* nothing else touched: the case's folder is byte-for-byte as it was (no partial outputs, no
  ``*.pre.onnx`` leftovers) and no run is created, unless the case starts a run, which must then
  be stored as ``failed`` with the same reason.

Cases are cheap (tiny synthetic data, ``epochs = 0``, failures before any training) so the whole
corpus runs in well under a minute.
"""

from __future__ import annotations

import gzip
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.hostile import evil_npy, evil_pt, evil_pt2, good_pt2, tabular_recipe_text, tiny_onnx
from workbench.cli import MAX_ERROR_LINE, main
from workbench.core.store import RunStore


@dataclass
class Ctx:
    """What a case may use: its own folder and the test's WORKBENCH_HOME / environment."""

    d: Path
    home: Path
    monkeypatch: pytest.MonkeyPatch

    def write(self, name: str, text: str | bytes) -> Path:
        path = self.d / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, encoding="utf-8")
        return path

    def fifo(self, name: str) -> Path:
        path = self.d / name
        os.mkfifo(path)
        return path


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Ctx], list[str]]
    expect: tuple[str, ...]
    run: bool = False  # the command creates a run, which must be recorded as failed
    other_lines: tuple[str, ...] = ()  # prefixes of legitimate warning lines printed before the error


CASES: list[Case] = []


def case(name: str, *expect: str, run: bool = False,
         other_lines: tuple[str, ...] = ()) -> Callable[[Callable[[Ctx], list[str]]], None]:
    def add(build: Callable[[Ctx], list[str]]) -> None:
        CASES.append(Case(name, build, expect, run, other_lines))
    return add


# ------------------------------------------------------------------------------------------ helpers

ZOO_MLP = 'source = "zoo"\nzoo = "mlp"'


def recipe(c: Ctx, model: str = ZOO_MLP, extra: str = "", epochs: int = 0, name: str = "r.toml") -> Path:
    return c.write(name, tabular_recipe_text(model, extra, epochs=epochs))


def data_recipe(c: Ctx, data_lines: str, name: str = "r.toml") -> Path:
    """A recipe whose [data] is ``data_lines`` (zoo MLP, no training)."""
    text = (f'name = "data-case"\n[model]\n{ZOO_MLP}\n[data]\n{data_lines}\n[train]\nepochs = 0\n'
            "[bench]\nbatch_sizes = [1]\niters = 3\nwarmup = 0\nmax_time_s = 0.5\n")
    return c.write(name, text)


def csv_run(c: Ctx, text: str | bytes) -> list[str]:
    path = c.write("d.csv", text)
    return run(data_recipe(c, f'source = "csv"\npath = "{path}"'))


def run(path: Path, *more: str) -> list[str]:
    return ["run", str(path), "--json", *more]


def idx_bytes(arr: np.ndarray) -> bytes:
    dtype = {np.dtype(np.uint8): 0x08}[arr.dtype]
    return bytes([0, 0, dtype, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes()


def png(path: Path, size: tuple[int, int] = (8, 8), mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, 128).save(path)
    return path


def image_folder(c: Ctx, classes: tuple[str, ...] = ("a", "b"), per_class: int = 3) -> Path:
    root = c.d / "imgs"
    for k in classes:
        for i in range(per_class):
            png(root / k / f"{i}.png")
    return root


def stored_run(c: Ctx, recipe_text: str = 'name = "stored"\n', status: str = "completed") -> int:
    with RunStore() as store:
        run_id = store.create_run("stored", recipe_text)
        store.finish_run(run_id, status, {"final": {"accuracy": 0.5}})
    return run_id


def unwritable_dir(c: Ctx) -> Path:
    """A folder this process cannot create files in (root ignores permissions: use read-only sysfs then)."""
    if os.geteuid() == 0:
        return Path("/sys/workbench-corpus")
    d = c.d / "locked"
    d.mkdir()
    d.chmod(0o500)
    return d


LONG = "x" * 600_000
MARKUP = "[bold]oops[/bold] [/] [link=file:///etc/passwd]"


# ============================================================================================ recipes

@case("recipe missing", "nope.toml", "recipe file not found")
def _(c: Ctx) -> list[str]:
    return run(c.d / "nope.toml")


@case("recipe is a folder", "rdir", "is a folder")
def _(c: Ctx) -> list[str]:
    (c.d / "rdir").mkdir()
    return run(c.d / "rdir")


@case("recipe is a FIFO", "pipe.toml", "not a regular file")
def _(c: Ctx) -> list[str]:
    return run(c.fifo("pipe.toml"))


@case("recipe is a device", "/dev/zero", "not a regular file")
def _(c: Ctx) -> list[str]:
    return run(Path("/dev/zero"))


@case("recipe empty", "empty.toml", "recipe is empty")
def _(c: Ctx) -> list[str]:
    return run(c.write("empty.toml", ""))


@case("recipe only comments", "c.toml", "recipe is empty")
def _(c: Ctx) -> list[str]:
    return run(c.write("c.toml", "# nothing here\n\n   \n"))


@case("recipe binary junk", "junk.toml", "not a text file")
def _(c: Ctx) -> list[str]:
    return run(c.write("junk.toml", bytes(range(256)) * 4))


@case("recipe invalid TOML", "bad.toml", "invalid TOML")
def _(c: Ctx) -> list[str]:
    return run(c.write("bad.toml", "[model\nzoo = \n"))


@case("recipe huge file", "huge.toml", "too large for a recipe")
def _(c: Ctx) -> list[str]:
    return run(c.write("huge.toml", "# " + "x" * (2 << 20) + "\n"))


@case("recipe path too long", "File name too long")
def _(c: Ctx) -> list[str]:
    return run(c.d / ("n" * 5000 + ".toml"))


@case("recipe unknown top-level key", "colour", "unknown key")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", 'colour = "blue"\n'))


@case("recipe unknown section key", "train.epoch", "allowed keys here")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", "[train]\nepoch = 3\n"))


@case("recipe wrong type", "train.epochs", "'three'")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", '[train]\nepochs = "three"\n'))


@case("recipe negative batch", "batching.batch_size = -4")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", "[batching]\nbatch_size = -4\n"))


@case("recipe future version", "version = 2", "reads version 1")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", "version = 2\n"))


@case("recipe section as value", "model must be a table")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", "model = 3\n"))


@case("recipe 600k-character value", "model.zoo", "characters)")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", f'[model]\nzoo = "{LONG}"\n'))


@case("recipe markup in a value", "model.zoo", "[bold]oops")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", f'[model]\nzoo = "{MARKUP}"\n'))


@case("recipe unknown model source", "model.source = 'keras'")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", '[model]\nsource = "keras"\n'))


@case("recipe python source without path", "model.path is required")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", '[model]\nsource = "python"\n'))


@case("recipe onnx with training", "cannot be trained", "train.epochs = 0")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", '[model]\nsource = "onnx"\npath = "m.onnx"\n[train]\nepochs = 2\n'))


@case("recipe fp16 on cpu", "fp16", "bf16")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", '[precision]\ndevice = "cpu"\nautocast = "fp16"\n'))


@case("recipe cuda on a cpu machine", "precision.device = 'cuda'", "no CUDA")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", '[precision]\ndevice = "cuda"\n'))


@case("recipe tf32 on cpu", "precision.tf32")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", "[precision]\ntf32 = true\n"))


@case("recipe empty bench batch sizes", "bench.batch_sizes")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", "[bench]\nbatch_sizes = []\n"))


@case("recipe bench iters 1", "bench.iters = 1")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", "[bench]\niters = 1\n"))


@case("recipe eval fraction 1.5", "data.eval_fraction = 1.5")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", "[data]\neval_fraction = 1.5\n"))


@case("recipe prune ratio 1", "prune.ratio = 1.0")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", "[prune]\nratio = 1.0\n"))


@case("recipe quantize method int4", "quantize.method = 'int4'")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", '[quantize]\nmethod = "int4"\n'))


@case("recipe export format tflite", "export.formats.0 = 'tflite'")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", '[export]\nformats = ["tflite"]\n'))


@case("recipe export opset 5", "export.opset = 5")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", "[export]\nopset = 5\n"))


@case("recipe lr 0", "train.lr = 0")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", "[train]\nlr = 0\n"))


@case("recipe grad scaler without fp16", "grad_scaler = 'on'")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", '[precision]\ngrad_scaler = "on"\n'))


@case("recipe csv without path", "data.path is required")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", '[data]\nsource = "csv"\n'))


@case("recipe synthetic shape with 0", "data.synthetic_shape")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", '[data]\nsource = "synthetic"\nsynthetic_shape = [3, 0, 8]\n'))


@case("recipe augment not a bool", "data.augment")
def _(c: Ctx) -> list[str]:
    return run(c.write("r.toml", '[data]\naugment = "sometimes"\n'))


@case("recipe bundle parent is a file", "export.bundle_dir", "is a file, not a folder", run=True)
def _(c: Ctx) -> list[str]:
    c.write("afile", "x")
    return run(recipe(c, extra=f'[export]\nbundle_dir = "{c.d / "afile" / "bundle"}"\n'))


@case("recipe bundle is an existing file", "export.bundle_dir", "existing file", run=True)
def _(c: Ctx) -> list[str]:
    c.write("bundle", "x")
    return run(recipe(c, extra=f'[export]\nbundle_dir = "{c.d / "bundle"}"\n'))


# ========================================================================================= model files

def model_run(c: Ctx, model: str, **kw: object) -> list[str]:
    return run(recipe(c, model, **kw))  # type: ignore[arg-type]


@case("model file missing", "missing.pt2", "not found", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, f'source = "export"\npath = "{c.d / "missing.pt2"}"')


@case("model path is a folder", "mdir", "is a folder", run=True)
def _(c: Ctx) -> list[str]:
    (c.d / "mdir").mkdir()
    return model_run(c, f'source = "onnx"\npath = "{c.d / "mdir"}"')


@case("model path is a FIFO", "m.onnx", "not a regular file", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, f'source = "onnx"\npath = "{c.fifo("m.onnx")}"')


@case("model file empty", "e.pt2", "empty", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, f'source = "export"\npath = "{c.write("e.pt2", b"")}"')


@case("onnx junk text", "j.onnx", "not a valid ONNX file", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, f'source = "onnx"\npath = "{c.write("j.onnx", "hello, I am not a model")}"')


@case("onnx truncated", "t.onnx", "ONNX", run=True)
def _(c: Ctx) -> list[str]:
    full = tiny_onnx(c.d / "full.onnx").read_bytes()
    (c.d / "full.onnx").unlink()
    return model_run(c, f'source = "onnx"\npath = "{c.write("t.onnx", full[: len(full) // 2])}"')


@case("onnx external data outside its folder", "evil.onnx", "points outside", run=True)
def _(c: Ctx) -> list[str]:
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(tiny_onnx(c.d / "evil.onnx")))
    w = model.graph.initializer[0]
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.external_data.add(key="location", value="../../../etc/passwd")
    onnx.save(model, str(c.d / "evil.onnx"))
    return model_run(c, f'source = "onnx"\npath = "{c.d / "evil.onnx"}"')


@case("pt2 junk bytes", "j.pt2", "not a torch.export archive", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, f'source = "export"\npath = "{c.write("j.pt2", b"PK no zip here" * 10)}"')


@case("pt2 truncated", "t.pt2", "torch.export archive", run=True)
def _(c: Ctx) -> list[str]:
    full = good_pt2(c.d / "full.pt2").read_bytes()
    (c.d / "full.pt2").unlink()
    return model_run(c, f'source = "export"\npath = "{c.write("t.pt2", full[: len(full) // 2])}"')


@case("pt2 with a pickled payload", "evil.pt2", "refused", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, f'source = "export"\npath = "{evil_pt2(c.d / "evil.pt2", c.d / "PWNED")}"')


@case("torchscript junk", "j.ts", "not a TorchScript archive", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, f'source = "torchscript"\npath = "{c.write("j.ts", "not torchscript")}"')


@case("torchscript that is a weights file", "w.ts", "looks like a torch.save file", run=True)
def _(c: Ctx) -> list[str]:
    import torch

    torch.save({"w": torch.zeros(2)}, c.d / "w.ts")
    return model_run(c, f'source = "torchscript"\npath = "{c.d / "w.ts"}"')


def py_model(c: Ctx, body: str, class_name: str = "", name: str = "net.py") -> list[str]:
    path = c.write(name, "import torch\nfrom torch import nn\n" + body)
    return model_run(c, f'source = "python"\npath = "{path}"\nclass_name = "{class_name}"')


NET = ("class Net(nn.Module):\n    def __init__(self, num_classes=2):\n        super().__init__()\n"
       "        self.fc = nn.Linear(4, num_classes)\n    def forward(self, x):\n        return self.fc(x)\n")


@case("py syntax error", "net.py", "syntax error at line", run=True)
def _(c: Ctx) -> list[str]:
    return py_model(c, "def broken(:\n")


@case("py calls sys.exit on import", "net.py", "sys.exit(0)", "__main__", run=True)
def _(c: Ctx) -> list[str]:
    return py_model(c, NET + "import sys\nsys.exit(0)\n")


@case("py calls exit() with a message", "net.py", "called sys.exit('bye')", run=True)
def _(c: Ctx) -> list[str]:
    return py_model(c, NET + "raise SystemExit('bye')\n")


@case("py raises KeyboardInterrupt on import", "net.py", "KeyboardInterrupt", run=True)
def _(c: Ctx) -> list[str]:
    return py_model(c, NET + "raise KeyboardInterrupt\n")


@case("py import fails", "net.py", "ModuleNotFoundError", "no_such_package", run=True)
def _(c: Ctx) -> list[str]:
    return py_model(c, "import no_such_package\n" + NET)


@case("py without any model", "net.py", "nn.Module classes defined in this file: none", run=True)
def _(c: Ctx) -> list[str]:
    return py_model(c, "X = 1\n")


@case("py class name typo", "net.py", "'Nett'", "did you mean 'Net'", run=True)
def _(c: Ctx) -> list[str]:
    return py_model(c, NET, "Nett")


@case("py class name names a test function", "net.py", "'test'", "not a model factory", run=True)
def _(c: Ctx) -> list[str]:
    return py_model(c, NET + "def test():\n    open('TEST_RAN', 'w').close()\n    print(Net()(torch.zeros(1, 4)))\n",
                    "test")


@case("py class name names a constant", "net.py", "'WIDTH'", run=True)
def _(c: Ctx) -> list[str]:
    return py_model(c, NET + "WIDTH = 3\n", "WIDTH")


@case("py constructor raises", "net.py", "Bad(", "ValueError", run=True)
def _(c: Ctx) -> list[str]:
    return py_model(c, "class Bad(nn.Module):\n    def __init__(self):\n        raise ValueError('no')\n", "Bad")


@case("py forward calls sys.exit", "forward", "sys.exit", run=True)
def _(c: Ctx) -> list[str]:
    return py_model(c, NET.replace("return self.fc(x)", "import sys; sys.exit(3)"))


@case("py forward calls sys.exit only while training", "model code called sys.exit(5)", run=True)
def _(c: Ctx) -> list[str]:
    body = NET.replace("return self.fc(x)", "if self.training:\n            raise SystemExit(5)\n"
                       "        return self.fc(x)")
    path = c.write("net.py", "import torch\nfrom torch import nn\n" + body)
    return model_run(c, f'source = "python"\npath = "{path}"', epochs=1)


@case("py model warns FutureWarning and DeprecationWarning, then fails", "outputs 10 classes", run=True)
def _(c: Ctx) -> list[str]:
    noisy = ("import warnings\nwarnings.warn('old api', FutureWarning)\n"
             "warnings.warn('older api', DeprecationWarning)\n")
    return py_model(c, noisy + NET.replace("num_classes=2", "n=10").replace("nn.Linear(4, num_classes)",
                                                                          "nn.Linear(4, n)"))


@case("max-batch finder cannot fit batch 2", "batching.find_max_batch", "even a training batch of 2", run=True,
      other_lines=("max-batch:",))
def _(c: Ctx) -> list[str]:
    text = tabular_recipe_text(ZOO_MLP).replace("[batching]\n", "[batching]\nfind_max_batch = true\n"
                                                "memory_budget_gb = 0.000000001\n")
    return run(c.write("mb.toml", text))


@case("py model with the wrong class count", "outputs 10 classes but data has 2", run=True)
def _(c: Ctx) -> list[str]:
    return py_model(c, NET.replace("num_classes=2", "n=10").replace("nn.Linear(4, num_classes)", "nn.Linear(4, n)"))


@case("py model for other inputs", "expects 8 input features", "[4]", run=True)
def _(c: Ctx) -> list[str]:
    return py_model(c, NET.replace("nn.Linear(4,", "nn.Linear(8,"))


@case("py model file with another suffix", "net.txt", "expected a .py file", run=True)
def _(c: Ctx) -> list[str]:
    path = c.write("net.txt", NET)
    return model_run(c, f'source = "python"\npath = "{path}"')


@case("weights missing", "none.safetensors", "not found", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, ZOO_MLP + f'\nweights = "{c.d / "none.safetensors"}"')


@case("weights with a pickled payload", "evil.pt", "refused", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, ZOO_MLP + f'\nweights = "{evil_pt(c.d / "evil.pt", c.d / "PWNED")}"')


@case("weights truncated safetensors", "w.safetensors", "not a valid safetensors file", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, ZOO_MLP + f'\nweights = "{c.write("w.safetensors", b"{junk")}"')


@case("weights that do not fit", "w.pt", "weights do not fit this model", run=True)
def _(c: Ctx) -> list[str]:
    import torch

    torch.save({"encoder.weight": torch.zeros(3)}, c.d / "w.pt")
    return model_run(c, ZOO_MLP + f'\nweights = "{c.d / "w.pt"}"')


@case("weights with an unknown suffix", "w.txt", "unsupported weights extension", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, ZOO_MLP + f'\nweights = "{c.write("w.txt", "1 2 3")}"')


@case("weights run:abc", "run:abc", "numeric ID", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, ZOO_MLP + '\nweights = "run:abc"')


@case("weights run:999", "run:999", "no run with ID 999", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, ZOO_MLP + '\nweights = "run:999"')


@case("weights on an onnx model", "cannot be applied to an ONNX model", run=True)
def _(c: Ctx) -> list[str]:
    onnx_path = tiny_onnx(c.d / "m.onnx")
    return model_run(c, f'source = "onnx"\npath = "{onnx_path}"\nweights = "{c.write("w.safetensors", "x")}"')


@case("teacher file missing", "distill.teacher", "t.pt2", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, ZOO_MLP, extra=f'[distill]\nteacher = "{c.d / "t.pt2"}"\n', epochs=1)


@case("teacher is an onnx file", "distill.teacher", "ONNX teacher", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, ZOO_MLP, extra=f'[distill]\nteacher = "{tiny_onnx(c.d / "t.onnx")}"\n', epochs=1)


@case("teacher zoo name unknown", "distill.teacher", "zoo:nope", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, ZOO_MLP, extra='[distill]\nteacher = "zoo:nope"\n', epochs=1)


@case("teacher run that does not exist", "distill.teacher = 'run:4242'", run=True)
def _(c: Ctx) -> list[str]:
    return model_run(c, ZOO_MLP, extra='[distill]\nteacher = "run:4242"\n', epochs=1)


@case("teacher weights with a payload", "evil.pt", "refused", run=True)
def _(c: Ctx) -> list[str]:
    evil = evil_pt(c.d / "evil.pt", c.d / "PWNED")
    return model_run(c, ZOO_MLP, extra=f'[distill]\nteacher = "zoo:mlp"\nteacher_weights = "{evil}"\n', epochs=1)


# ======================================================================================== data sources

@case("csv missing", "nope.csv", "not found", run=True)
def _(c: Ctx) -> list[str]:
    return run(data_recipe(c, f'source = "csv"\npath = "{c.d / "nope.csv"}"'))


@case("csv is a folder", "cdir", "is a folder", run=True)
def _(c: Ctx) -> list[str]:
    (c.d / "cdir").mkdir()
    return run(data_recipe(c, f'source = "csv"\npath = "{c.d / "cdir"}"'))


@case("csv is a FIFO", "d.csv", "not a regular file", run=True)
def _(c: Ctx) -> list[str]:
    return run(data_recipe(c, f'source = "csv"\npath = "{c.fifo("d.csv")}"'))


@case("csv empty", "d.csv", "empty CSV", run=True)
def _(c: Ctx) -> list[str]:
    return csv_run(c, "")


@case("csv not UTF-8", "d.csv", "not UTF-8", run=True)
def _(c: Ctx) -> list[str]:
    return csv_run(c, "a,label\n1,\xff\xfe\n".encode("latin-1"))


@case("csv header only", "d.csv", "header only", run=True)
def _(c: Ctx) -> list[str]:
    return csv_run(c, "a,b,label\n")


@case("csv without the label column", "d.csv", "no label column 'label'", run=True)
def _(c: Ctx) -> list[str]:
    return csv_run(c, "a,b\n1,2\n3,4\n")


@case("csv non-numeric feature", "d.csv", "feature column 'colour' is not numeric", run=True)
def _(c: Ctx) -> list[str]:
    return csv_run(c, "colour,label\nred,0\nblue,1\n")


@case("csv with one class", "d.csv", "only 1 class", run=True)
def _(c: Ctx) -> list[str]:
    rows = "".join(f"{i},0\n" for i in range(10))
    return csv_run(c, "a,label\n" + rows)


@case("csv with NaN", "d.csv", "NaN or infinity", run=True)
def _(c: Ctx) -> list[str]:
    rows = "".join(f"{'nan' if i == 3 else i},{i % 2}\n" for i in range(10))
    return csv_run(c, "a,label\n" + rows)


@case("csv ragged line", "d.csv", "line 3 has 3 fields", run=True)
def _(c: Ctx) -> list[str]:
    return csv_run(c, "a,label\n1,0\n2,1,9\n")


@case("csv label column typo with markup", "no label column", "[red]", run=True)
def _(c: Ctx) -> list[str]:
    path = c.write("d.csv", "a,b\n1,2\n3,4\n")
    return run(data_recipe(c, f'source = "csv"\npath = "{path}"\nlabel_column = "[red]y[/red]"'))


@case("npz not a zip", "d.npz", "not an .npz archive", run=True)
def _(c: Ctx) -> list[str]:
    return run(data_recipe(c, f'source = "npz"\npath = "{c.write("d.npz", "nope")}"'))


@case("npz with unknown array names (brackets in the message)", "d.npz", "no feature/label arrays", "[", run=True)
def _(c: Ctx) -> list[str]:
    np.savez(c.d / "d.npz", **{"[bold]feat": np.zeros((4, 2)), "lbl[/]": np.zeros(4)})
    return run(data_recipe(c, f'source = "npz"\npath = "{c.d / "d.npz"}"'))


@case("npz object array", "d.npz", "Python objects", run=True)
def _(c: Ctx) -> list[str]:
    obj = np.empty(4, dtype=object)
    obj[:] = [{"a": 1}] * 4
    np.savez(c.d / "d.npz", x=obj, y=np.arange(4) % 2)
    return run(data_recipe(c, f'source = "npz"\npath = "{c.d / "d.npz"}"'))


@case("npz images with NaN", "d.npz", "NaN", "sample 3", run=True)
def _(c: Ctx) -> list[str]:
    x = np.zeros((20, 8, 8), np.float32)
    x[3, 2, 2] = np.nan
    np.savez(c.d / "d.npz", x=x, y=np.arange(20) % 2)
    return run(data_recipe(c, f'source = "npz"\npath = "{c.d / "d.npz"}"'))


@case("npz images with inf", "d.npz", "infinite", run=True)
def _(c: Ctx) -> list[str]:
    x = np.zeros((20, 1, 8, 8), np.float32)
    x[7] = np.inf
    np.savez(c.d / "d.npz", x=x, y=np.arange(20) % 2)
    return run(data_recipe(c, f'source = "npz"\npath = "{c.d / "d.npz"}"'))


@case("npz length mismatch", "d.npz", "x has 10 samples but y has 7 labels", run=True)
def _(c: Ctx) -> list[str]:
    np.savez(c.d / "d.npz", x=np.zeros((10, 3)), y=np.zeros(7))
    return run(data_recipe(c, f'source = "npz"\npath = "{c.d / "d.npz"}"'))


@case("npz 5-D array", "d.npz", "shape", run=True)
def _(c: Ctx) -> list[str]:
    np.savez(c.d / "d.npz", x=np.zeros((4, 1, 2, 2, 2)), y=np.arange(4) % 2)
    return run(data_recipe(c, f'source = "npz"\npath = "{c.d / "d.npz"}"'))


@case("npz float labels", "d.npz", "non-integer floats", run=True)
def _(c: Ctx) -> list[str]:
    np.savez(c.d / "d.npz", x=np.zeros((4, 3)), y=np.array([0.5, 1.5, 0.5, 1.5]))
    return run(data_recipe(c, f'source = "npz"\npath = "{c.d / "d.npz"}"'))


@case("npz too few samples to split", "d.npz", "too few samples", run=True)
def _(c: Ctx) -> list[str]:
    np.savez(c.d / "d.npz", x=np.zeros((2, 3)), y=np.array([0, 1]))
    return run(data_recipe(c, f'source = "npz"\npath = "{c.d / "d.npz"}"'))


@case("mnist folder without files", "mn", "train-images-idx3-ubyte", run=True)
def _(c: Ctx) -> list[str]:
    (c.d / "mn").mkdir()
    return run(data_recipe(c, f'source = "mnist"\npath = "{c.d / "mn"}"'))


@case("mnist corrupt gzip", "train-images-idx3-ubyte.gz", "corrupt gzip", run=True)
def _(c: Ctx) -> list[str]:
    good = gzip.compress(idx_bytes(np.zeros((4, 8, 8), np.uint8)))
    c.write("mn/train-images-idx3-ubyte.gz", good[:12] + b"\x00" * 40 + good[52:])
    c.write("mn/train-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(np.array([0, 1, 0, 1], np.uint8))))
    return run(data_recipe(c, f'source = "mnist"\npath = "{c.d / "mn"}"'))


@case("mnist bad magic", "train-images-idx3-ubyte", "not an IDX file", run=True)
def _(c: Ctx) -> list[str]:
    c.write("mn/train-images-idx3-ubyte", b"GIF89a" + b"\x00" * 100)
    c.write("mn/train-labels-idx1-ubyte", idx_bytes(np.array([0, 1], np.uint8)))
    return run(data_recipe(c, f'source = "mnist"\npath = "{c.d / "mn"}"'))


@case("mnist truncated", "train-images-idx3-ubyte", "truncated or corrupt", run=True)
def _(c: Ctx) -> list[str]:
    c.write("mn/train-images-idx3-ubyte", idx_bytes(np.zeros((4, 8, 8), np.uint8))[:-10])
    c.write("mn/train-labels-idx1-ubyte", idx_bytes(np.array([0, 1, 0, 1], np.uint8)))
    return run(data_recipe(c, f'source = "mnist"\npath = "{c.d / "mn"}"'))


@case("mnist label count mismatch", "4 images but", "3 labels", run=True)
def _(c: Ctx) -> list[str]:
    c.write("mn/train-images-idx3-ubyte", idx_bytes(np.zeros((4, 8, 8), np.uint8)))
    c.write("mn/train-labels-idx1-ubyte", idx_bytes(np.array([0, 1, 0], np.uint8)))
    return run(data_recipe(c, f'source = "mnist"\npath = "{c.d / "mn"}"'))


@case("image folder is a file", "imgs", "is a file", run=True)
def _(c: Ctx) -> list[str]:
    return run(data_recipe(c, f'source = "image_folder"\npath = "{c.write("imgs", "x")}"'))


@case("image folder without class folders", "imgs", "no class sub-folders", "2 images lie directly", run=True)
def _(c: Ctx) -> list[str]:
    png(c.d / "imgs" / "a.png")
    png(c.d / "imgs" / "b.png")
    return run(data_recipe(c, f'source = "image_folder"\npath = "{c.d / "imgs"}"'))


@case("image folder with one class", "imgs", "only 1 class", run=True)
def _(c: Ctx) -> list[str]:
    return run(data_recipe(c, f'source = "image_folder"\npath = "{image_folder(c, ("cats",))}"'))


@case("image folder with a truncated png", "2.png", "not a readable image", run=True)
def _(c: Ctx) -> list[str]:
    root = image_folder(c)
    good = png(c.d / "big.png", (64, 64), "RGB")
    data = good.read_bytes()
    good.unlink()
    (root / "b" / "2.png").write_bytes(data[: len(data) - 30])
    return run(data_recipe(c, f'source = "image_folder"\npath = "{root}"'))


@case("image folder with a truncated jpeg", "cut.jpg", "end-of-image", run=True)
def _(c: Ctx) -> list[str]:
    root = image_folder(c)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(c.d / "full.jpg")
    data = (c.d / "full.jpg").read_bytes()
    (c.d / "full.jpg").unlink()
    (root / "a" / "cut.jpg").write_bytes(data[: len(data) * 2 // 3])
    return run(data_recipe(c, f'source = "image_folder"\npath = "{root}"'))


@case("image folder with a text file named .png", "fake.png", "not a readable image", run=True)
def _(c: Ctx) -> list[str]:
    root = image_folder(c)
    (root / "a" / "fake.png").write_text("I am text")
    return run(data_recipe(c, f'source = "image_folder"\npath = "{root}"'))


@case("image folder with a FIFO named .png", "pipe.png", "not a regular file", run=True)
def _(c: Ctx) -> list[str]:
    root = image_folder(c)
    os.mkfifo(root / "b" / "pipe.png")
    return run(data_recipe(c, f'source = "image_folder"\npath = "{root}"'))


@case("image folder path missing", "nowhere", "not found", run=True)
def _(c: Ctx) -> list[str]:
    return run(data_recipe(c, f'source = "image_folder"\npath = "{c.d / "nowhere"}"'))


@case("data path is a device", "/dev/zero", "not a regular file", run=True)
def _(c: Ctx) -> list[str]:
    return run(data_recipe(c, 'source = "npz"\npath = "/dev/zero"'))


# ============================================================================================== bench

@case("bench missing file", "nope.onnx", "not found")
def _(c: Ctx) -> list[str]:
    return ["bench", str(c.d / "nope.onnx")]


@case("bench a folder", "bdir", "is a folder")
def _(c: Ctx) -> list[str]:
    (c.d / "bdir").mkdir()
    return ["bench", str(c.d / "bdir")]


@case("bench a FIFO", "b.onnx", "not a regular file")
def _(c: Ctx) -> list[str]:
    return ["bench", str(c.fifo("b.onnx"))]


@case("bench an empty file", "b.pt2", "empty")
def _(c: Ctx) -> list[str]:
    return ["bench", str(c.write("b.pt2", b""))]


@case("bench a text file", "b.txt", "not a zip archive")
def _(c: Ctx) -> list[str]:
    return ["bench", str(c.write("b.txt", "hello"))]


@case("bench evil pt2", "evil.pt2", "refused")
def _(c: Ctx) -> list[str]:
    return ["bench", str(evil_pt2(c.d / "evil.pt2", c.d / "PWNED"))]


@case("bench bad --shape", "--shape 'three'")
def _(c: Ctx) -> list[str]:
    return ["bench", str(tiny_onnx(c.d / "m.onnx")), "--shape", "three"]


@case("bench --shape with 0", "sizes must be positive")
def _(c: Ctx) -> list[str]:
    return ["bench", str(tiny_onnx(c.d / "m.onnx")), "--shape", "0"]


@case("bench --shape with the wrong rank", "--shape has 3 dims")
def _(c: Ctx) -> list[str]:
    return ["bench", str(tiny_onnx(c.d / "m.onnx")), "--shape", "3,8,8"]


@case("bench --threads -1", "--threads", "-1")
def _(c: Ctx) -> list[str]:
    return ["bench", str(tiny_onnx(c.d / "m.onnx")), "--threads", "-1"]


@case("bench --iters 0", "--iters", "0")
def _(c: Ctx) -> list[str]:
    return ["bench", str(tiny_onnx(c.d / "m.onnx")), "--iters", "0"]


@case("bench --iters 2", "--iters 2", "at least 3")
def _(c: Ctx) -> list[str]:
    return ["bench", str(tiny_onnx(c.d / "m.onnx")), "--iters", "2"]


@case("bench --max-time 0", "--max-time", "must be a finite number > 0")
def _(c: Ctx) -> list[str]:
    return ["bench", str(tiny_onnx(c.d / "m.onnx")), "--max-time", "0"]


@case("bench --max-time nan", "--max-time", "must be a finite number > 0")
def _(c: Ctx) -> list[str]:
    return ["bench", str(tiny_onnx(c.d / "m.onnx")), "--max-time", "nan"]


@case("bench --seq-len 0", "--seq-len", "0")
def _(c: Ctx) -> list[str]:
    return ["bench", str(tiny_onnx(c.d / "m.onnx")), "--seq-len", "0"]


@case("quantize --min-cosine 1.5", "--min-cosine", "from 0 to 1")
def _(c: Ctx) -> list[str]:
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--min-cosine", "1.5"]


@case("bench --data that is not a labelled file", "d.txt", ".npz")
def _(c: Ctx) -> list[str]:
    return ["bench", str(tiny_onnx(c.d / "m.onnx")), "--data", str(c.write("d.txt", "hello"))]


@case("bench --batch-sizes 0", "--batch-sizes", "'0'")
def _(c: Ctx) -> list[str]:
    return ["bench", str(tiny_onnx(c.d / "m.onnx")), "--batch-sizes", "0"]


@case("bench --runtimes bogus", "--runtimes tpu")
def _(c: Ctx) -> list[str]:
    return ["bench", str(tiny_onnx(c.d / "m.onnx")), "--runtimes", "tpu"]


@case("bench onnx under eager", "onnxruntime only")
def _(c: Ctx) -> list[str]:
    return ["bench", str(tiny_onnx(c.d / "m.onnx")), "--runtimes", "eager"]


@case("bench torchscript without --shape", "pass --shape")
def _(c: Ctx) -> list[str]:
    import torch

    torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), str(c.d / "m.ts"))
    return ["bench", str(c.d / "m.ts")]


# =========================================================================================== quantize

@case("quantize --batch 0", "--batch", "0")
def _(c: Ctx) -> list[str]:
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--batch", "0"]


@case("quantize --samples 0", "--samples", "0")
def _(c: Ctx) -> list[str]:
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--samples", "0"]


@case("quantize --threads -2", "--threads", "-2")
def _(c: Ctx) -> list[str]:
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--threads", "-2"]


@case("quantize --method int2", "--method", "int2")
def _(c: Ctx) -> list[str]:
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--method", "int2"]


@case("quantize a non-onnx model", "takes an .onnx file")
def _(c: Ctx) -> list[str]:
    return ["quantize", str(good_pt2(c.d / "m.pt2"))]


@case("quantize missing model", "nope.onnx", "not found")
def _(c: Ctx) -> list[str]:
    return ["quantize", str(c.d / "nope.onnx")]


@case("quantize --out exists", "q.onnx", "already exists", "--force")
def _(c: Ctx) -> list[str]:
    c.write("q.onnx", "keep me")
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--out", str(c.d / "q.onnx")]


@case("quantize --out is the input", "would overwrite the input model")
def _(c: Ctx) -> list[str]:
    m = tiny_onnx(c.d / "m.onnx")
    return ["quantize", str(m), "--out", str(m), "--force"]


@case("quantize --out is a folder", "--out", "is a folder")
def _(c: Ctx) -> list[str]:
    (c.d / "qdir").mkdir()
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--out", str(c.d / "qdir")]


@case("quantize --out parent is a file", "--out", "is a file, not a folder")
def _(c: Ctx) -> list[str]:
    c.write("afile", "x")
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--out", str(c.d / "afile" / "q.onnx")]


@case("quantize --out unwritable", "--out", "cannot write there")
def _(c: Ctx) -> list[str]:
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--out", str(unwritable_dir(c) / "q.onnx")]


@case("quantize --calib missing", "cal.npy", "not found")
def _(c: Ctx) -> list[str]:
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--method", "static", "--calib", str(c.d / "cal.npy")]


@case("quantize --calib FIFO", "cal.npy", "not a regular file")
def _(c: Ctx) -> list[str]:
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--method", "static", "--calib", str(c.fifo("cal.npy"))]


@case("quantize --calib wrong shape", "cal.npy", "the model takes [N, 4]")
def _(c: Ctx) -> list[str]:
    np.save(c.d / "cal.npy", np.zeros((8, 5), np.float32))
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--method", "static", "--calib", str(c.d / "cal.npy")]


@case("quantize --calib object array", "evil.npy", "Python objects")
def _(c: Ctx) -> list[str]:
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--method", "static",
            "--calib", str(evil_npy(c.d / "evil.npy", c.d / "PWNED"))]


@case("quantize --calib junk npy", "cal.npy", "cannot read .npy")
def _(c: Ctx) -> list[str]:
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--method", "static", "--calib",
            str(c.write("cal.npy", b"\x93NUMPY garbage"))]


@case("quantize dynamic fails mid-way: no MatMul or Conv", "dynamic INT8 quantizes MatMul", "method = 'static'")
def _(c: Ctx) -> list[str]:
    """Fails after pre-processing has written its intermediate: nothing may be left next to --out."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "relu",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(c.d / "relu.onnx"))
    return ["quantize", str(c.d / "relu.onnx"), "--method", "dynamic", "--out", str(c.d / "out" / "q.onnx")]


@case("quantize --data with the wrong kind", "d.txt", "--data takes")
def _(c: Ctx) -> list[str]:
    return ["quantize", str(tiny_onnx(c.d / "m.onnx")), "--data", str(c.write("d.txt", "x"))]


# ============================================================================================= export

@case("export --formats tflite", "--formats 'tflite'", "onnx, pt2, safetensors")
def _(c: Ctx) -> list[str]:
    return ["export", str(recipe(c)), "--formats", "tflite"]


@case("export --formats empty list", "--formats ','")
def _(c: Ctx) -> list[str]:
    return ["export", str(recipe(c)), "--formats", ","]


@case("export --opset 5", "--opset", "13 to 23")
def _(c: Ctx) -> list[str]:
    return ["export", str(recipe(c)), "--opset", "5"]


@case("export --bundle parent is a file", "export.bundle_dir", "is a file, not a folder")
def _(c: Ctx) -> list[str]:
    c.write("afile", "x")
    return ["export", str(recipe(c)), "--bundle", str(c.d / "afile" / "bundle")]


@case("export --bundle exists and is not empty", "already exists and is not empty", "--force")
def _(c: Ctx) -> list[str]:
    c.write("bundle/model.onnx", "old bundle")
    return ["export", str(recipe(c)), "--bundle", str(c.d / "bundle")]


@case("export --bundle unwritable", "export.bundle_dir", "cannot write there")
def _(c: Ctx) -> list[str]:
    return ["export", str(recipe(c)), "--bundle", str(unwritable_dir(c) / "bundle")]


@case("export a run that does not exist", "no run with ID 4242")
def _(c: Ctx) -> list[str]:
    return ["export", "4242"]


@case("export a missing recipe", "gone.toml", "recipe file not found")
def _(c: Ctx) -> list[str]:
    return ["export", str(c.d / "gone.toml")]


@case("export a run whose stored recipe is broken", "run ", "invalid TOML")
def _(c: Ctx) -> list[str]:
    return ["export", str(stored_run(c, "[model\n"))]


@case("export a recipe with a broken model", "m.pt2", "not a torch.export archive", run=True)
def _(c: Ctx) -> list[str]:
    return ["export", str(recipe(c, f'source = "export"\npath = "{c.write("m.pt2", "nope")}"')), "--json"]


# ============================================================================================= report

@case("report missing run", "no run with ID 999")
def _(c: Ctx) -> list[str]:
    return ["report", "999", "--out", str(c.d / "r.html")]


@case("report --out is a folder", "--out", "is a folder")
def _(c: Ctx) -> list[str]:
    (c.d / "rdir").mkdir()
    return ["report", str(stored_run(c)), "--out", str(c.d / "rdir")]


@case("report --out parent is a file", "--out", "is a file, not a folder")
def _(c: Ctx) -> list[str]:
    c.write("afile", "x")
    return ["report", str(stored_run(c)), "--out", str(c.d / "afile" / "r.html")]


@case("report --out exists", "old.html", "already exists", "--force")
def _(c: Ctx) -> list[str]:
    c.write("old.html", "<p>keep me</p>")
    return ["report", str(stored_run(c)), "--out", str(c.d / "old.html")]


@case("report --out unwritable", "--out", "cannot write there")
def _(c: Ctx) -> list[str]:
    return ["report", str(stored_run(c)), "--out", str(unwritable_dir(c) / "r.html")]


@case("report --csv is a folder", "--csv", "is a folder")
def _(c: Ctx) -> list[str]:
    (c.d / "cdir").mkdir()
    return ["report", str(stored_run(c)), "--out", str(c.d / "r.html"), "--csv", str(c.d / "cdir")]


@case("report --json is a folder", "--json", "is a folder")
def _(c: Ctx) -> list[str]:
    (c.d / "jdir").mkdir()
    return ["report", str(stored_run(c)), "--out", str(c.d / "r.html"), "--json", str(c.d / "jdir")]


@case("report --csv same as --out", "two outputs name the same file")
def _(c: Ctx) -> list[str]:
    return ["report", str(stored_run(c)), "--out", str(c.d / "r.html"), "--csv", str(c.d / "r.html")]


@case("report run id not a number", "RUN_ID", "'first'")
def _(c: Ctx) -> list[str]:
    return ["report", "first", "--out", str(c.d / "r.html")]


@case("report default out exists", "report.html", "already exists")
def _(c: Ctx) -> list[str]:
    c.write("report.html", "old")
    return ["report", str(stored_run(c))]


# ============================================================================================== sweep

@case("sweep --iters 0", "--iters", "0")
def _(c: Ctx) -> list[str]:
    return ["sweep", str(recipe(c)), "--iters", "0"]


@case("sweep --iters 2", "--iters", "at least 3")
def _(c: Ctx) -> list[str]:
    return ["sweep", str(recipe(c)), "--iters", "2"]


@case("sweep --train-steps 0", "--train-steps", "0")
def _(c: Ctx) -> list[str]:
    return ["sweep", str(recipe(c)), "--train-steps", "0"]


@case("sweep --loader-batches 0", "--loader-batches", "0")
def _(c: Ctx) -> list[str]:
    return ["sweep", str(recipe(c)), "--loader-batches", "0"]


@case("sweep --loader-steps -1", "--loader-steps", "-1")
def _(c: Ctx) -> list[str]:
    return ["sweep", str(recipe(c)), "--loader-steps", "-1"]


@case("sweep --batch-sizes 0", "--batch-sizes", "'0'")
def _(c: Ctx) -> list[str]:
    return ["sweep", str(recipe(c)), "--batch-sizes", "0"]


@case("sweep --workers -1", "--workers", "'-1'")
def _(c: Ctx) -> list[str]:
    return ["sweep", str(recipe(c)), "--workers", "-1"]


@case("sweep --precisions int4", "--precisions", "fp32,bf16")
def _(c: Ctx) -> list[str]:
    return ["sweep", str(recipe(c)), "--precisions", "int4"]


@case("sweep --latency-budget 0", "--latency-budget", "must be > 0")
def _(c: Ctx) -> list[str]:
    return ["sweep", str(recipe(c)), "--latency-budget", "0"]


@case("sweep a recipe with a missing model", "gone.onnx", "not found", run=True)
def _(c: Ctx) -> list[str]:
    return ["sweep", str(recipe(c, f'source = "onnx"\npath = "{c.d / "gone.onnx"}"')), "--json", "--iters", "3"]


# ======================================================================================== sensitivity

@case("sensitivity --ratio 1.5", "--ratio", "between 0 and 1")
def _(c: Ctx) -> list[str]:
    return ["sensitivity", str(recipe(c)), "--ratio", "1.5"]


@case("sensitivity --ratio abc", "--ratio", "'abc'")
def _(c: Ctx) -> list[str]:
    return ["sensitivity", str(recipe(c)), "--ratio", "abc"]


@case("sensitivity --max-drop -1", "--max-drop", "between 0 and 100")
def _(c: Ctx) -> list[str]:
    return ["sensitivity", str(recipe(c)), "--max-drop", "-1"]


@case("sensitivity an onnx model", "needs a PyTorch model")
def _(c: Ctx) -> list[str]:
    return ["sensitivity", str(recipe(c, f'source = "onnx"\npath = "{tiny_onnx(c.d / "m.onnx")}"'))]


@case("sensitivity a missing recipe", "r0.toml", "not found")
def _(c: Ctx) -> list[str]:
    return ["sensitivity", str(c.d / "r0.toml")]


# =================================================================================== other commands

@case("show a missing run", "no run with ID 12345")
def _(c: Ctx) -> list[str]:
    return ["show", "12345"]


@case("show a run id that is not a number", "run_id", "'last'")
def _(c: Ctx) -> list[str]:
    return ["show", "last"]


@case("runs with an unknown flag", "unrecognized arguments", "--colour")
def _(c: Ctx) -> list[str]:
    return ["runs", "--colour"]


@case("unknown command", "invalid choice", "'benchmark'")
def _(c: Ctx) -> list[str]:
    return ["benchmark", "x"]


@case("run --name with a 600k value and a missing recipe", "r.toml")
def _(c: Ctx) -> list[str]:
    return ["run", str(c.d / "r.toml"), "--name", LONG]


# ============================================================================================== store

@case("runs database is junk", "runs.sqlite", "not a usable Workbench runs database")
def _(c: Ctx) -> list[str]:
    (c.home / "runs.sqlite").write_bytes(b"definitely not SQLite " * 100)
    return ["runs"]


@case("runs database is a folder", "runs.sqlite", "is a folder")
def _(c: Ctx) -> list[str]:
    (c.home / "runs.sqlite").mkdir()
    return ["runs", "--json"]


@case("runs database from a newer version", "schema version 7", "newer Workbench")
def _(c: Ctx) -> list[str]:
    import sqlite3

    RunStore().close()
    with sqlite3.connect(c.home / "runs.sqlite") as conn:
        conn.execute("PRAGMA user_version = 7")
    return ["show", "1"]


@case("runs database of another program", "not a Workbench runs database", "songs")
def _(c: Ctx) -> list[str]:
    import sqlite3

    with sqlite3.connect(c.home / "runs.sqlite") as conn:
        conn.execute("CREATE TABLE songs (title TEXT)")
    return ["runs"]


@case("WORKBENCH_HOME is a file", "WORKBENCH_HOME", "is a file, not a folder")
def _(c: Ctx) -> list[str]:
    c.monkeypatch.setenv("WORKBENCH_HOME", str(c.write("homefile", "x")))
    return ["runs"]


@case("WORKBENCH_HOME under a file", "WORKBENCH_HOME", "cannot create this folder")
def _(c: Ctx) -> list[str]:
    c.monkeypatch.setenv("WORKBENCH_HOME", str(c.write("homefile", "x") / "home"))
    return ["runs"]


@case("run with a junk runs database", "runs.sqlite", "not a usable Workbench runs database")
def _(c: Ctx) -> list[str]:
    (c.home / "runs.sqlite").write_bytes(b"\x00junk" * 300)
    return run(recipe(c))


# ============================================================================================== the test

def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink() or p.is_dir() or not p.exists():
            continue
        st = p.lstat()
        out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def _runs(home: Path) -> list:  # type: ignore[type-arg]
    db = home / "runs.sqlite"
    if not db.is_file():
        return []
    try:
        with RunStore(db) as store:
            return store.list_runs()
    except Exception:  # the store cases break the database on purpose
        return []


def test_corpus_is_large_enough() -> None:
    assert len(CASES) >= 120, len(CASES)
    assert len({c.name for c in CASES}) == len(CASES), "case names must be unique"


@pytest.mark.parametrize("bad", CASES, ids=[c.name for c in CASES])
def test_bad_input(bad: Case, tmp_path: Path, workbench_home: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "case"
    d.mkdir()
    monkeypatch.chdir(d)
    ctx = Ctx(d, workbench_home, monkeypatch)
    argv = bad.build(ctx)
    before_runs = {r.id for r in _runs(workbench_home)}
    before = _snapshot(d)
    capsys.readouterr()

    rc = main(argv)

    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip() and not (bad.other_lines and ln.startswith(bad.other_lines))]
    assert rc == 2, f"exit {rc}; stderr:\n{err}"
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("error: "), line
    assert "Traceback" not in err and "internal error" not in line
    assert len(line) <= MAX_ERROR_LINE + len("error: ") + 20, f"{len(line)} characters"
    for expected in bad.expect:
        assert expected in line, f"{expected!r} not in: {line}"
    assert _snapshot(d) == before, "the command left, changed or removed files"
    assert not (d / "PWNED").exists() and not (d / "TEST_RAN").exists(), "user/hostile code ran"
    new_runs = [r for r in _runs(workbench_home) if r.id not in before_runs]
    if bad.run:
        assert len(new_runs) == 1, f"expected one recorded run, found {len(new_runs)}"
        stored = new_runs[0]
        assert stored.status == "failed", stored.status
        assert stored.error and stored.error.splitlines()[0][:150] in line, (stored.error[:300], line)
    else:
        assert not new_runs, f"no run should be created, found {[(r.id, r.status) for r in new_runs]}"
