"""Malicious and broken checkpoint files: one clear error, nothing executed, nothing imported.

Every payload here would write a marker file if it ran; each test checks the marker never
appears, and an autouse fixture checks no ``dnnlib`` / ``torch_utils`` (or NVIDIA's
``_imported_module_*``) module got imported. A control test shows the payloads are real: the
stock ``pickle`` module does run them.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from model.formats import CheckpointError
from model.safe_pickle import EasyDict, UnsafeCheckpoint, load_nvidia_pickle, load_rosinality_checkpoint, record_state_dict
from nvidia_pickle import (
    Call,
    EasyDictOut,
    dump_nvidia_pickle,
    make_g,
    nvidia_pickle_bytes,
    snapshot,
    tensor_from_storage_bytes,
    tensorflow_snapshot,
    torch_save_bytes,
)

REPO = Path(__file__).resolve().parents[1]


def _foreign_modules() -> list[str]:
    return [m for m in sys.modules
            if m.split(".")[0] in ("dnnlib", "torch_utils") or m.startswith("_imported_module_")]


@pytest.fixture(autouse=True)
def no_foreign_modules():
    assert not _foreign_modules()
    yield
    assert not _foreign_modules(), f"loading imported NVIDIA modules: {_foreign_modules()}"


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


def write_marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').write('pwned')"


def hostile_calls(marker: Path) -> dict[str, Call]:
    """Globals a hostile pickle would use to run code; each would create ``marker``."""
    return {
        "os.system": Call("os", "system", f"touch {marker}"),
        "posix.system": Call("posix", "system", f"touch {marker}"),
        "builtins.exec": Call("builtins", "exec", write_marker_code(marker)),
        "builtins.eval": Call("builtins", "eval", write_marker_code(marker)),
        "subprocess.Popen": Call("subprocess", "Popen", ["touch", str(marker)]),
        "builtins.__import__": Call("builtins", "__import__", "dnnlib"),
        "torch.load": Call("torch", "load", str(marker)),
    }


class Evil:
    """Pickles (by the stock pickler, inside torch.save) as ``builtins.exec(code)``."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self) -> tuple[Any, ...]:
        return (exec, (self.code,))


def test_control_payloads_do_run_under_plain_pickle(marker: Path) -> None:
    """The payloads are real: stock pickle.loads executes them (so the tests below can fail)."""
    data = nvidia_pickle_bytes({"G_ema": hostile_calls(marker)["builtins.exec"]})
    pickle.loads(data)
    assert marker.exists()


# (a) a reduce of a code-running global, anywhere in the file ----------------------------------


@pytest.mark.parametrize("name", list(hostile_calls(Path("x"))))
@pytest.mark.parametrize("where", ["top", "module_state", "init_kwargs", "persistent_meta"])
def test_hostile_global_is_refused(tmp_path: Path, marker: Path, name: str, where: str) -> None:
    payload = hostile_calls(marker)[name]
    G = make_g()
    if where == "top":
        data: Any = {"G_ema": payload}
    elif where == "module_state":
        G.mapping.fc0.extra = payload  # deep inside a nested record's state
        data = snapshot(G)
    elif where == "init_kwargs":
        G._init_kwargs["mapping_kwargs"] = EasyDictOut(num_layers=2, activation=payload)
        data = snapshot(G)
    else:  # the persistent object's meta dict itself is produced by the payload
        data = {"G_ema": Call("torch_utils.persistence", "_reconstruct_persistent_obj", payload)}
    path = dump_nvidia_pickle(tmp_path / "evil.pkl", data)
    with pytest.raises(UnsafeCheckpoint, match=rf"refused global {name.replace('.', '[.]')} "):
        load_nvidia_pickle(path)
    assert not marker.exists()


# (b) a payload in the pickled module source -----------------------------------------------------


def test_module_source_payload_is_never_run(tmp_path: Path, marker: Path) -> None:
    src = write_marker_code(marker) + "\nimport dnnlib\nclass TinyG:\n    pass\n"
    path = dump_nvidia_pickle(tmp_path / "src.pkl", snapshot(make_g()), module_src=src)
    data = load_nvidia_pickle(path)
    record_state_dict(data["G_ema"])
    assert data["G_ema"].module_src == src  # kept as text only
    assert not marker.exists()


# (c) a hostile payload nested in a tensor storage ------------------------------------------------


def storage_payloads(marker: Path) -> dict[str, bytes]:
    code = write_marker_code(marker)
    return {
        "plain pickle": nvidia_pickle_bytes(Call("builtins", "exec", code), protocol=2),
        "plain pickle v4": nvidia_pickle_bytes(Call("builtins", "exec", code), protocol=4),
        "torch.save zip": torch_save_bytes({"x": Evil(code)}),
        "torch.save legacy": torch_save_bytes({"x": Evil(code)}, legacy=True),
    }


@pytest.mark.parametrize("kind", list(storage_payloads(Path("x"))))
def test_nested_storage_payload_is_refused(tmp_path: Path, marker: Path, kind: str) -> None:
    payload = storage_payloads(marker)[kind]
    G = make_g()
    G.mapping.fc0._parameters["weight"] = tensor_from_storage_bytes(payload)  # type: ignore[assignment]
    path = dump_nvidia_pickle(tmp_path / "storage.pkl", snapshot(G))
    # Refused by name, or (protocol 4 framing) before the loader even reaches the global.
    expected = r"refused by the weights-only loader \(Unsupported operand" if kind.endswith("v4") else r"refused global (builtins\.)?exec"
    with pytest.raises(UnsafeCheckpoint, match=r"tensor storage: " + expected):
        load_nvidia_pickle(path)
    assert not marker.exists()


def test_storage_payload_that_is_not_a_storage(tmp_path: Path) -> None:
    G = make_g()
    G._parameters["const"] = tensor_from_storage_bytes(torch_save_bytes({"a": torch.ones(1)}))  # type: ignore[assignment]
    with pytest.raises(UnsafeCheckpoint, match="decodes to a dict, not a storage"):
        load_nvidia_pickle(dump_nvidia_pickle(tmp_path / "a.pkl", snapshot(G)))
    G._parameters["const"] = tensor_from_storage_bytes(b"\x00garbage")  # type: ignore[assignment]
    with pytest.raises(CheckpointError, match="tensor storage: refused by the weights-only loader"):
        load_nvidia_pickle(dump_nvidia_pickle(tmp_path / "b.pkl", snapshot(G)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation
        cut = torch_save_bytes(torch.ones(16).storage(), legacy=True)[:-20]
    G._parameters["const"] = tensor_from_storage_bytes(cut)  # type: ignore[assignment]
    with pytest.raises(CheckpointError, match="corrupt tensor storage"):
        load_nvidia_pickle(dump_nvidia_pickle(tmp_path / "c.pkl", snapshot(G)))


def test_tensor_reaching_past_its_storage(tmp_path: Path) -> None:
    G = make_g()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TypedStorage deprecation
        storage = torch_save_bytes(torch.ones(4).storage(), legacy=True)
    G._parameters["const"] = tensor_from_storage_bytes(storage, size=(100, 100))  # type: ignore[assignment]
    with pytest.raises(CheckpointError, match="reaches past its storage"):
        load_nvidia_pickle(dump_nvidia_pickle(tmp_path / "oob.pkl", snapshot(G)))


# (d) rosinality .pt with a hostile global --------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_rosinality_hostile_global_is_refused(tmp_path: Path, marker: Path, legacy: bool) -> None:
    ckpt = {"g_ema": {"style.1.weight": torch.ones(2, 2)}, "args": Evil(write_marker_code(marker))}
    path = tmp_path / "evil.pt"
    path.write_bytes(torch_save_bytes(ckpt, legacy=legacy))
    with pytest.raises(UnsafeCheckpoint, match=r"refused global (builtins\.)?exec ") as info:
        load_rosinality_checkpoint(path)
    assert "weights_only` set to `False`" not in str(info.value)  # never advise the unsafe retry
    assert not marker.exists()


# Other ways a pickle can reach beyond the allowlist -----------------------------------------------


def test_build_onto_allowed_class_is_refused(tmp_path: Path) -> None:
    """A pickle may BUILD (setattr) onto any object it holds, classes included."""
    ops = (pickle.PROTO + b"\x04"
           + pickle.SHORT_BINUNICODE + b"\x0bdnnlib.util" + pickle.SHORT_BINUNICODE + b"\x08EasyDict" + pickle.STACK_GLOBAL
           + pickle.NONE + pickle.EMPTY_DICT + pickle.SHORT_BINUNICODE + b"\x0b__getattr__" + pickle.NONE + pickle.SETITEM
           + pickle.TUPLE2 + pickle.BUILD + pickle.STOP)
    path = tmp_path / "build.pkl"
    path.write_bytes(ops)
    with pytest.raises(CheckpointError):
        load_nvidia_pickle(path)
    assert EasyDict(a=1).a == 1  # the class is untouched
    with pytest.raises(UnsafeCheckpoint, match="refused to modify class EasyDict"):
        setattr(EasyDict, "__getattr__", None)  # what BUILD's slot-state branch would do


def test_persistent_id_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "pid.pkl"
    path.write_bytes(pickle.PROTO + b"\x04" + pickle.SHORT_BINUNICODE + b"\x01x" + pickle.BINPERSID + pickle.STOP)
    with pytest.raises(UnsafeCheckpoint, match="persistent id"):
        load_nvidia_pickle(path)


@pytest.mark.parametrize("dtype", ["O8", "V16", "U8"])
def test_numpy_object_and_structured_dtypes_are_refused(tmp_path: Path, dtype: str) -> None:
    G = make_g()
    G.weird = Call("numpy", "dtype", dtype, False, True)
    with pytest.raises(UnsafeCheckpoint, match="refused numpy dtype"):
        load_nvidia_pickle(dump_nvidia_pickle(tmp_path / "np.pkl", snapshot(G)))


def test_tensorflow_pickle_gets_a_clear_message(tmp_path: Path) -> None:
    data = (Call("dnnlib.tflib.network", "Network"),) * 3  # a REDUCE call rather than NEWOBJ + BUILD
    with pytest.raises(CheckpointError, match="TensorFlow-era NVIDIA network pickle.*legacy.py"):
        load_nvidia_pickle(dump_nvidia_pickle(tmp_path / "tf.pkl", data))
    other = {"G_ema": Call("dnnlib.tflib.tfutil", "Optimizer")}
    with pytest.raises(CheckpointError, match="TensorFlow-era NVIDIA network pickle"):
        load_nvidia_pickle(dump_nvidia_pickle(tmp_path / "tf2.pkl", other))


@pytest.mark.parametrize(
    "version, protocol, expected",
    [
        (4, 4, r"TensorFlow-era NVIDIA StyleGAN2 network pickle \(dnnlib\.tflib\.network\.Network, layout version 4\)"
               r".*legacy\.py .*stylegan3 or stylegan2-ada-pytorch"
               r".*--source=IN\.pkl --dest=OUT\.pkl"),
        (3, 2, r"TensorFlow-era NVIDIA StyleGAN \(first version\) network pickle .*layout version 3.*"
               r"legacy\.py converts only TensorFlow StyleGAN2 pickles"),
    ],
)
def test_real_tensorflow_pickle_layout_is_recognised_without_running_it(
    tmp_path: Path, version: int, protocol: int, expected: str
) -> None:
    """(G, D, Gs) of dnnlib.tflib.network.Network objects, as the TensorFlow releases pickled them:
    NEWOBJ of the class, then BUILD with {version, name, static_kwargs, components, build_module_src,
    build_func_name, variables}. Loading one with NVIDIA's code execs build_module_src."""
    marker = tmp_path / "PWNED"
    src = f"open({str(marker)!r}, 'w').write('ran')\n"
    path = dump_nvidia_pickle(tmp_path / "stylegan2-ffhq-config-f.pkl",
                              tensorflow_snapshot(version=version, build_module_src=src), protocol=protocol)
    with pytest.raises(CheckpointError) as info:
        load_nvidia_pickle(path)
    message = str(info.value)
    assert type(info.value) is CheckpointError and re.search(expected, message), message
    assert message.startswith(f"{path}: ") and "\n" not in message and "_Sealed" not in message
    assert not marker.exists()


# Broken files --------------------------------------------------------------------------------------


@pytest.fixture
def valid_pickle(tmp_path: Path) -> Path:
    return dump_nvidia_pickle(tmp_path / "valid.pkl", snapshot(make_g()))


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.pkl").write_bytes(b"")
    with pytest.raises(CheckpointError, match="file is empty"):
        load_nvidia_pickle(tmp_path / "empty.pkl")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="file is empty"):
        load_rosinality_checkpoint(tmp_path / "empty.pt")


@pytest.mark.parametrize("fraction", [0.5, 0.9, 0.999])
def test_truncated_pickle(tmp_path: Path, valid_pickle: Path, fraction: float) -> None:
    data = valid_pickle.read_bytes()
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(CheckpointError, match="truncated|corrupt"):
        load_nvidia_pickle(cut)


def test_truncated_torch_save(tmp_path: Path) -> None:
    data = torch_save_bytes({"g_ema": {"w": torch.randn(64, 64)}})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated torch checkpoint"):
        load_rosinality_checkpoint(cut)


@pytest.mark.parametrize("seed", range(8))
def test_random_bytes(tmp_path: Path, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    body = bytes(torch.randint(0, 256, (4096,), generator=gen, dtype=torch.uint8).tolist())
    for head in (b"", b"\x80\x04", b"PK\x03\x04"):  # also behind plausible magic bytes
        path = tmp_path / "random.bin"
        path.write_bytes(head + body)
        with pytest.raises(CheckpointError):
            load_nvidia_pickle(path)
        with pytest.raises(CheckpointError):
            load_rosinality_checkpoint(path)


@pytest.mark.parametrize(
    "data, message",
    [
        ([1, 2, 3], "holds a list, not a StyleGAN network pickle"),
        ({"weights": 1}, "no 'G_ema' or 'G' network"),
        ({"G_ema": "Generator"}, "no 'G_ema' or 'G' network"),
        ({"G_ema": make_g(), "D": [1]}, "entry 'D' is a list, not a network"),
    ],
)
def test_valid_pickle_of_wrong_structure(tmp_path: Path, data: Any, message: str) -> None:
    path = dump_nvidia_pickle(tmp_path / "wrong.pkl", data)
    with pytest.raises(CheckpointError, match=message):
        load_nvidia_pickle(path)


def test_record_with_non_tensor_parameter(tmp_path: Path) -> None:
    G = make_g()
    G.mapping._parameters["bogus"] = [1.0, 2.0]  # type: ignore[assignment]
    data = load_nvidia_pickle(dump_nvidia_pickle(tmp_path / "p.pkl", snapshot(G)))
    with pytest.raises(CheckpointError, match=r"'bogus' is a list, not a tensor"):
        record_state_dict(data["G_ema"])


# A fresh interpreter with an audit hook: no code execution events at all --------------------------


def test_loading_hostile_files_raises_no_exec_events(tmp_path: Path, marker: Path) -> None:
    """Load every hostile file in a subprocess that records exec/compile/system/import events."""
    files = []
    for i, payload in enumerate(hostile_calls(marker).values()):
        files.append(str(dump_nvidia_pickle(tmp_path / f"a{i}.pkl", {"G_ema": payload})))
    files.append(str(dump_nvidia_pickle(tmp_path / "src.pkl", snapshot(make_g()),
                                        module_src=write_marker_code(marker))))
    for i, payload in enumerate(storage_payloads(marker).values()):
        G = make_g()
        G._parameters["const"] = tensor_from_storage_bytes(payload)  # type: ignore[assignment]
        files.append(str(dump_nvidia_pickle(tmp_path / f"c{i}.pkl", snapshot(G))))
    pt = tmp_path / "evil.pt"
    pt.write_bytes(torch_save_bytes({"g_ema": {}, "args": Evil(write_marker_code(marker))}))
    files.append(str(pt))

    script = textwrap.dedent(
        """
        import json, sys
        from model.formats import CheckpointError
        from model.safe_pickle import load_nvidia_pickle, load_rosinality_checkpoint, record_state_dict
        # Warm up on benign files first, so lazy imports inside torch (legitimate module code
        # execution) happen before the hook; after that, any exec/compile is the file's doing.
        benign = json.loads(sys.argv[2])
        record_state_dict(load_nvidia_pickle(benign[0])["G_ema"])
        load_rosinality_checkpoint(benign[1])
        events = []
        def hook(event, args):
            if event in ("exec", "compile", "os.system", "os.exec", "os.posix_spawn", "subprocess.Popen"):
                events.append(event)
            elif event == "import" and str(args[0]).split(".")[0] in ("dnnlib", "torch_utils"):
                events.append("import " + str(args[0]))
        sys.addaudithook(hook)
        results = []
        for path in json.loads(sys.argv[1]):
            try:
                if path.endswith(".pt"):
                    load_rosinality_checkpoint(path)
                else:
                    record_state_dict(load_nvidia_pickle(path)["G_ema"])
                results.append("loaded")
            except CheckpointError as exc:
                results.append(type(exc).__name__)
        foreign = [m for m in sys.modules if m.split(".")[0] in ("dnnlib", "torch_utils")]
        print(json.dumps({"events": events, "results": results, "foreign": foreign}))
        """
    )
    benign_pt = tmp_path / "benign.pt"
    benign_pt.write_bytes(torch_save_bytes({"g_ema": {"w": torch.ones(2)}, "args": argparse.Namespace(size=4)}))
    benign = [str(dump_nvidia_pickle(tmp_path / "benign.pkl", snapshot(make_g()))), str(benign_pt)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script, json.dumps(files), json.dumps(benign)],
                          capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["events"] == []
    assert report["foreign"] == []
    n_refused = len(hostile_calls(marker)) + len(storage_payloads(marker)) + 1
    assert report["results"].count("UnsafeCheckpoint") == n_refused
    assert report["results"].count("loaded") == 1  # the source payload: loaded as text, not run
    assert not marker.exists()


def test_error_messages_are_single_clear_lines(tmp_path: Path, marker: Path) -> None:
    path = dump_nvidia_pickle(tmp_path / "evil.pkl", {"G_ema": hostile_calls(marker)["os.system"]})
    with pytest.raises(UnsafeCheckpoint) as info:
        load_nvidia_pickle(path)
    text = str(info.value)
    assert "\n" not in text and str(path) in text and "nothing was executed" in text
    assert isinstance(info.value, CheckpointError)
