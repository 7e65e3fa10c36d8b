"""``vjapp convert``: foreign generator files in, native files out that draw the same images."""

from __future__ import annotations

import argparse
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

import reference_nvidia as nv
import reference_rosinality as ros
from model.stylegan2 import load_generator
from nvidia_pickle import Call, dump_nvidia_pickle, snapshot, tensorflow_snapshot, torch_save_bytes
from vjapp.cli import main

Z_DIM = W_DIM = 16


def nvidia_generator(seed: int = 0) -> nv.Generator:
    G = nv.Generator(z_dim=Z_DIM, c_dim=0, w_dim=W_DIM, img_resolution=16, img_channels=3,
                     mapping_kwargs=dict(num_layers=2), synthesis_kwargs=dict(channel_base=256, channel_max=32))
    return nv.randomize_(G, seed).eval()


def rosinality_generator(seed: int = 0) -> ros.Generator:
    G = ros.Generator(size=16, style_dim=Z_DIM, n_mlp=3, channels={4: 32, 8: 32, 16: 16})
    return ros.randomize_(G, seed).eval()


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = main(["convert", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def summary_field(out: str, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}:\s+(.*)$", out, re.M)
    assert match, f"no {name!r} line in:\n{out}"
    return match.group(1).strip()


def test_convert_nvidia_pickle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = nvidia_generator()
    src = dump_nvidia_pickle(tmp_path / "network-snapshot-000100.pkl", snapshot(ref, D=None, G_ema=ref))
    rc, out, err = run_cli(capsys, str(src), "-o", str(tmp_path / "gen"))
    assert rc == 0, err

    assert summary_field(out, "source").endswith("(nvidia-pkl)")
    assert summary_field(out, "resolution") == "16x16"
    assert summary_field(out, "num_ws") == "6"
    assert summary_field(out, "w_dim") == str(W_DIM)
    assert summary_field(out, "z_dim") == str(Z_DIM)
    assert summary_field(out, "mapping layers").startswith("2 ")
    assert summary_field(out, "parameters") == f"{sum(p.numel() for p in ref.parameters()):,}"
    assert str(tmp_path / "gen.safetensors") in out and str(tmp_path / "gen.json") in out

    doc = json.loads((tmp_path / "gen.json").read_text())
    assert doc["metadata"]["source_file"] == src.name
    assert doc["metadata"]["source_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert doc["metadata"]["source_format"] == "nvidia-pkl"

    G = load_generator(tmp_path / "gen")
    z = torch.randn([2, Z_DIM], generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = ref(z, None, truncation_psi=0.7, noise_mode="const")  # [2, 3, 16, 16]
        got = G(z, truncation_psi=0.7, noise_mode="const")
    assert got.shape == expected.shape == (2, 3, 16, 16)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_convert_rosinality_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = rosinality_generator()
    with torch.no_grad():
        latent_avg = ref.mean_latent(256)[0]  # [style_dim]
    ckpt = {"g_ema": ref.state_dict(), "latent_avg": latent_avg,
            "args": argparse.Namespace(size=16, latent=Z_DIM, n_mlp=3, channel_multiplier=2)}
    src = tmp_path / "550000.pt"
    src.write_bytes(torch_save_bytes(ckpt))
    out_dir = tmp_path / "converted"
    out_dir.mkdir()
    rc, out, err = run_cli(capsys, str(src), "-o", str(out_dir))  # a directory: OUT/<src stem>
    assert rc == 0, err
    assert summary_field(out, "source").endswith("(rosinality-pt)")
    assert summary_field(out, "resolution") == "16x16"
    assert summary_field(out, "num_ws") == "6"
    assert summary_field(out, "mapping layers").startswith("3 ")

    G = load_generator(out_dir / "550000")
    torch.testing.assert_close(G.mapping.w_avg, latent_avg)
    z = torch.randn([2, Z_DIM], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, _ = ref([z], randomize_noise=False)  # [2, 3, 16, 16]
        got = G(z, noise_mode="const")
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


# Bad input: exit code 1 and one line on stderr, no traceback -------------------------------------


def assert_one_line_error(rc: int, out: str, err: str, pattern: str) -> None:
    assert rc == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vjapp convert: error: ")
    assert re.search(pattern, lines[0]), lines[0]
    assert "Traceback" not in err


def test_missing_and_empty_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert_one_line_error(*run_cli(capsys, str(tmp_path / "nope.pkl"), "-o", str(tmp_path / "o")), "no such file")
    (tmp_path / "empty.pkl").write_bytes(b"")
    assert_one_line_error(*run_cli(capsys, str(tmp_path / "empty.pkl"), "-o", str(tmp_path / "o")), "file is empty")
    assert not (tmp_path / "o.json").exists()


def test_hostile_files_exit_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "PWNED"
    evil = dump_nvidia_pickle(tmp_path / "evil.pkl", {"G_ema": Call("os", "system", f"touch {marker}")})
    assert_one_line_error(*run_cli(capsys, str(evil), "-o", str(tmp_path / "o")), r"refused global os\.system")

    class Evil:
        def __reduce__(self):  # noqa: ANN204
            return (exec, (f"open({str(marker)!r}, 'w')",))

    pt = tmp_path / "evil.pt"
    pt.write_bytes(torch_save_bytes({"g_ema": rosinality_generator().state_dict(), "args": Evil()}))
    assert_one_line_error(*run_cli(capsys, str(pt), "-o", str(tmp_path / "o")), r"refused global")
    assert not marker.exists()


def test_module_source_payload_converts_without_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "PWNED"
    src = dump_nvidia_pickle(tmp_path / "g.pkl", snapshot(nvidia_generator()),
                             module_src=f"open({str(marker)!r}, 'w').write('x')\n")
    rc, out, err = run_cli(capsys, str(src), "-o", str(tmp_path / "g"))
    assert rc == 0, err
    assert not marker.exists()


def test_nan_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = nvidia_generator()
    with torch.no_grad():
        ref.synthesis.b8.conv0.weight[0, 0, 0, 0] = float("nan")
    src = dump_nvidia_pickle(tmp_path / "nan.pkl", snapshot(ref))
    assert_one_line_error(*run_cli(capsys, str(src), "-o", str(tmp_path / "o")),
                          r"synthesis\.b8\.conv0\.weight contains NaN")
    assert not (tmp_path / "o.safetensors").exists()


def test_wrong_shape_tensor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = nvidia_generator()
    ref.mapping.fc1.weight = torch.nn.Parameter(torch.randn(W_DIM, W_DIM + 3))
    src = dump_nvidia_pickle(tmp_path / "shape.pkl", snapshot(ref))
    assert_one_line_error(*run_cli(capsys, str(src), "-o", str(tmp_path / "o")), r"mapping\.fc1\.weight has shape")


def test_stylegan2_network_claiming_stylegan3_source_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A StyleGAN2 network whose stored source is networks_stylegan3.py: read as StyleGAN3, whose
    constructor arguments it does not have (real StyleGAN3 pickles: tests/test_stylegan3.py)."""
    ref = nvidia_generator()
    sg3_src = "class SynthesisInput(torch.nn.Module):\n    pass\nclass Generator(torch.nn.Module):\n    pass\n"
    src = dump_nvidia_pickle(tmp_path / "sg3.pkl", snapshot(ref), module_src=sg3_src)
    assert_one_line_error(*run_cli(capsys, str(src), "-o", str(tmp_path / "o")),
                          r"StyleGAN3 init_kwargs has arguments this importer does not know: .*synthesis_kwargs")


def test_swagan_checkpoint_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    G = ros.randomize_(ros.SWAGANGenerator(size=32, style_dim=Z_DIM, n_mlp=3, channels={4: 32, 8: 32, 16: 16}), 0)
    src = tmp_path / "swagan.pt"
    src.write_bytes(torch_save_bytes({"g_ema": G.state_dict(), "latent_avg": torch.zeros(Z_DIM),
                                      "args": argparse.Namespace(arch="swagan", size=32)}))
    assert_one_line_error(*run_cli(capsys, str(src), "-o", str(tmp_path / "o")),
                          r"swagan\.pt: .*SWAGAN generator .*not supported")
    assert not (tmp_path / "o.safetensors").exists()


def test_tensorflow_pickle_names_its_converter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = dump_nvidia_pickle(tmp_path / "stylegan2-ffhq-config-f.pkl", tensorflow_snapshot(version=4))
    assert_one_line_error(*run_cli(capsys, str(src), "-o", str(tmp_path / "o")),
                          r"TensorFlow-era NVIDIA StyleGAN2 network pickle .*legacy\.py .*then run vjapp convert")
    assert not (tmp_path / "o.safetensors").exists()


def test_refuses_to_overwrite_and_native_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = dump_nvidia_pickle(tmp_path / "g.pkl", snapshot(nvidia_generator()))
    assert run_cli(capsys, str(src), "-o", str(tmp_path / "g"))[0] == 0
    assert_one_line_error(*run_cli(capsys, str(src), "-o", str(tmp_path / "g")), "already exists.*--force")
    assert run_cli(capsys, str(src), "-o", str(tmp_path / "g"), "--force")[0] == 0
    assert_one_line_error(*run_cli(capsys, str(tmp_path / "g.safetensors"), "-o", str(tmp_path / "h")),
                          "already a native vjapp checkpoint")
    assert_one_line_error(*run_cli(capsys, str(src), "-o", str(tmp_path / "h"), "--format", "rosinality-pt"),
                          "content says nvidia-pkl")


def test_random_bytes_and_wrong_structure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"\x80\x04" + bytes(range(256)) * 4)
    assert_one_line_error(*run_cli(capsys, str(junk), "-o", str(tmp_path / "o")), "corrupt|truncated|refused")
    wrong = dump_nvidia_pickle(tmp_path / "wrong.pkl", {"G_ema": [1, 2]})
    assert_one_line_error(*run_cli(capsys, str(wrong), "-o", str(tmp_path / "o")), "not a StyleGAN network pickle")
    only_d = dump_nvidia_pickle(tmp_path / "d.pkl", {"G": nvidia_generator(), "D": None})
    assert_one_line_error(*run_cli(capsys, str(only_d), "-o", str(tmp_path / "o")), r"has no 'G_ema' network \(it has \['G'\]\)")
    assert run_cli(capsys, str(only_d), "-o", str(tmp_path / "o"), "--network", "G")[0] == 0
