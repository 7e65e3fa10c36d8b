"""StyleGAN3 generators: imported NVIDIA pickles draw the reference's images; camera; widescreen; files.

The reference (tests/reference_stylegan3.py) is a literal re-implementation of NVIDIA's
networks_stylegan3.py sharing no code with model/stylegan3.py; it is written as an NVIDIA network
pickle with tests/nvidia_pickle.py (numpy-typed attributes and all) and read back through
``vjapp convert``, i.e. the restricted unpickler, as a user's file would be.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import scipy  # noqa: E402,F401 - the reference designs its filters with scipy, as NVIDIA's code does (a dev dependency)

import reference_stylegan3 as ref3  # noqa: E402
from model import stylegan2  # noqa: E402
from model.formats import CheckpointError  # noqa: E402
from model.generators import load_generator, prepare_generator, save_generator  # noqa: E402
from model.import_stylegan import UnsupportedCheckpoint, generator_from_nvidia  # noqa: E402
from model.stylegan3 import (  # noqa: E402
    Generator,
    StyleGAN3Config,
    camera_matrix,
    frame_size,
    layer_specs,
    lowpass_filter,
)
from nvidia_pickle import dump_nvidia_pickle, snapshot  # noqa: E402
from vjapp.cli import main  # noqa: E402

TOL = 1e-3  # max |difference| on the image
PSI = 0.7
Z_DIM, W_DIM = 16, 24
# Source text as a real stylegan3 pickle stores it (only searched for class names, never run).
SG3_SOURCE = "class SynthesisInput(torch.nn.Module):\n    pass\nclass SynthesisLayer(torch.nn.Module):\n    pass\n"
CONFIGS = {
    "t": dict(channel_base=256, channel_max=32),
    "r": dict(channel_base=512, channel_max=64, conv_kernel=1, use_radial_filters=True),  # train.py's r: 2x channels
}


def reference(cfg: str = "t", resolution: int = 32, seed: int = 0, **extra) -> ref3.Generator:
    torch.manual_seed(seed)
    kwargs = dict(CONFIGS[cfg], num_layers=6, margin_size=10, magnitude_ema_beta=0.99, **extra)
    G = ref3.Generator(z_dim=Z_DIM, c_dim=0, w_dim=W_DIM, img_resolution=resolution, img_channels=3,
                       mapping_kwargs=dict(num_layers=2), **kwargs)
    return ref3.randomize_(G, seed + 1).eval()


def ours(cfg: str = "t", resolution: int = 32, seed: int = 0) -> Generator:
    """A randomly initialised generator of ours (no reference involved)."""
    torch.manual_seed(seed)
    config = StyleGAN3Config(z_dim=Z_DIM, w_dim=W_DIM, resolution=resolution, num_layers=6, margin_size=10,
                             **CONFIGS[cfg])
    G = Generator(config)
    with torch.no_grad():  # a non-trivial input transform and biases, as a trained network has
        G.synthesis.input.affine.weight.normal_(0, 0.3)
        for name, p in G.named_parameters():
            if name.endswith(".bias") and "affine" not in name:
                p.normal_(0, 0.2)
    return G.eval()


def write_pickle(path: Path, G: torch.nn.Module) -> Path:
    return dump_nvidia_pickle(path, snapshot(G, G_ema=G), module_src=SG3_SOURCE)


def convert(tmp_path: Path, src: Path, capsys: pytest.CaptureFixture[str], name: str = "gen") -> tuple[int, str, str]:
    rc = main(["convert", str(src), "-o", str(tmp_path / name)])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_images_close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> None:
    assert a.shape == b.shape, (a.shape, b.shape)
    assert float(a.std()) > 0.02, "reference image is nearly constant; the comparison would prove nothing"
    diff = float((a - b).abs().max())
    assert diff <= tol, f"max |difference| {diff:.2e} > {tol}"


def z_batch(n: int = 2, seed: int = 5) -> torch.Tensor:
    return torch.randn(n, Z_DIM, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------------------------
# Fidelity through the real pickle path


@pytest.mark.parametrize("cfg", ["t", "r"])
def test_converted_pickle_draws_the_reference_images(cfg: str, tmp_path: Path, capsys) -> None:
    ref = reference(cfg)
    rc, out, err = convert(tmp_path, write_pickle(tmp_path / f"stylegan3-{cfg}.pkl", ref), capsys)
    assert rc == 0, err
    assert re.search(rf"architecture:\s+StyleGAN3 generator, .*config {cfg}", out), out
    doc = json.loads((tmp_path / "gen.json").read_text())
    assert doc["kind"] == "stylegan3"
    assert doc["metadata"]["source_class"] == "training.networks_stylegan3.Generator"
    G = load_generator(tmp_path / "gen")
    assert isinstance(G, Generator) and G.num_ws == ref.num_ws == 8
    assert G.config.conv_kernel == (1 if cfg == "r" else 3) and G.config.use_radial_filters == (cfg == "r")
    # Every tensor of NVIDIA's network, filters and EMAs included, arrived unchanged.
    theirs = ref.state_dict()
    assert set(G.state_dict()) == set(theirs)
    assert any(k.endswith("down_filter") and v.ndim == (2 if cfg == "r" else 1) for k, v in theirs.items())
    z = z_batch()
    with torch.no_grad():
        ws_ref = ref.mapping(z, None, truncation_psi=PSI)
        ws = G.mapping(z, truncation_psi=PSI)
        assert float((ws - ws_ref).abs().max()) <= 1e-5 * float(ws_ref.abs().max())
        expected = ref(z, None, truncation_psi=PSI, noise_mode="const")
        assert_images_close(expected, G(z, truncation_psi=PSI, noise_mode="const"))
        assert_images_close(expected, G.synthesis(ws_ref, noise_mode="const"))
        # Batch independence: one sample alone draws the same picture.
        assert_images_close(expected[1:], G.synthesis(ws_ref[1:], noise_mode="const"))


@pytest.mark.parametrize("extra", [{}, dict(conv_kernel=1, use_radial_filters=True, num_fp16_res=0, conv_clamp=None)])
def test_nvidia_default_geometry_with_fourteen_layers(extra) -> None:
    """NVIDIA's default layer progression (14 layers, margin 10) at a small resolution, imported
    directly; config t, and config r as ``--fp32`` writes it (no clamp)."""
    torch.manual_seed(0)
    ref = ref3.randomize_(ref3.Generator(z_dim=Z_DIM, c_dim=0, w_dim=W_DIM, img_resolution=16, img_channels=3,
                                         channel_base=128, channel_max=16, magnitude_ema_beta=0.99, **extra), 3).eval()
    if not extra:
        with torch.no_grad():  # (x + 300) * sqrt(2) > 256: the clamp acts on two channels of one layer
            getattr(ref.synthesis, ref.synthesis.layer_names[3]).bias[:2] += 300
    G = generator_from_nvidia(ref.init_kwargs, ref.state_dict(), class_name="training.networks_stylegan3.Generator")
    assert G.synthesis.layer_names == ref.synthesis.layer_names and G.num_ws == 16
    assert G.config.conv_clamp == (None if extra else 256.0)
    z = z_batch(1)
    with torch.no_grad():
        expected = ref(z, None, PSI)
        assert_images_close(expected, G(z, PSI))
        if not extra:  # negative control: without the clamp the picture differs, so it was exercised
            unclamped = generator_from_nvidia({**ref.init_kwargs, "conv_clamp": None}, ref.state_dict())
            assert float((unclamped(z, PSI) - expected).abs().max()) > 10 * TOL


def test_filters_we_design_equal_nvidias() -> None:
    """Fresh generators of ours get NVIDIA's (scipy-designed) filters, separable and radial."""
    for cfg in ("t", "r"):
        theirs = reference(cfg).state_dict()
        mine = ours(cfg).state_dict()
        keys = [k for k in theirs if k.endswith("_filter")]
        assert keys and set(keys) == {k for k in mine if k.endswith("_filter")}
        for k in keys:
            assert mine[k].shape == theirs[k].shape
            assert float((mine[k] - theirs[k]).abs().max()) < 1e-6, k
    assert lowpass_filter(1, 2.0, 1.0, 16) is None
    odd = lowpass_filter(5, 2.0, 3.0, 16, radial=True)  # a tap at r = 0: finite
    assert odd is not None and bool(torch.isfinite(odd).all()) and abs(float(odd.sum()) - 1) < 1e-6


@pytest.mark.parametrize("up, down", [(1, 1), (2, 1), (4, 1), (1, 2), (2, 2), (4, 2)])
def test_upfirdn2d_matches_nvidias_reference(up: int, down: int) -> None:
    """Our polyphase up-sampling / strided down-sampling FIR equals NVIDIA's zero-stuffing reference,
    for separable and 2-D filters and for pads that crop (negative) as well as pad."""
    from model.stylegan3 import upfirdn2d

    gen = torch.Generator().manual_seed(up * 10 + down)
    x = torch.randn(2, 3, 9, 11, generator=gen)
    for taps in (1, 4, 12):
        for pad in ((0, 0, 0, 0), (5, 6, 3, 4), (-2, 3, 4, -1), (9, -7, 1, 1)):
            for f in (torch.rand(taps, generator=gen), torch.rand(taps, taps, generator=gen), None):
                try:
                    expected = ref3.upfirdn2d(x, f, up=up, down=down, padding=list(pad), gain=up * up)
                except RuntimeError:
                    continue  # the filter is longer than the padded signal
                got = upfirdn2d(x, f, up=up, down=down, padding=pad, gain=up * up)
                assert got.shape == expected.shape, (taps, pad)
                assert float((got - expected).abs().max()) <= 1e-6 * max(1.0, float(expected.abs().max())), (taps, pad)


def test_layer_geometry_matches_nvidia() -> None:
    ref = reference("t")
    config = StyleGAN3Config(z_dim=Z_DIM, w_dim=W_DIM, resolution=32, num_layers=6, **CONFIGS["t"])
    inp, specs = layer_specs(config)
    assert [s.name for s in specs] == ref.synthesis.layer_names
    for spec in specs:
        layer = getattr(ref.synthesis, spec.name)
        assert (spec.in_size, spec.out_size) == (int(layer.in_size[0]), int(layer.out_size[0]))
        assert getattr(Generator(config).synthesis, spec.name).padding((spec.in_size,) * 2, (spec.out_size,) * 2) \
            == layer.padding
    assert (inp.size, inp.channels) == (int(ref.synthesis.input.size[0]), ref.synthesis.input.channels)


# --------------------------------------------------------------------------------------------
# Camera


@pytest.mark.parametrize("cfg", ["t", "r"])
def test_camera_matches_nvidias_user_transform(cfg: str) -> None:
    """set_camera(translate, rotate) draws what gen_images.py draws with --translate/--rotate."""
    ref = reference(cfg)
    G = generator_from_nvidia(ref.init_kwargs, ref.state_dict())
    ws = ref.mapping(z_batch(), None, truncation_psi=PSI).detach()
    translate, angle = (0.1, -0.15), 20.0
    with torch.no_grad():
        plain = G.synthesis(ws)
        ref.synthesis.input.transform.copy_(torch.from_numpy(np.linalg.inv(ref3.make_transform(translate, angle))))
        expected = ref.synthesis(ws, noise_mode="const")
        assert float((expected - plain).abs().max()) > 100 * TOL  # the move is visible
        G.set_camera(translate=translate, rotate=angle)
        assert_images_close(expected, G.synthesis(ws))
        # Per call, per sample: camera for this call only; the stored one is left as it was.
        cams = torch.stack([torch.eye(3), camera_matrix(translate, angle)])
        G.set_camera()
        both = G.synthesis(ws, camera=cams)
        assert_images_close(plain[:1], both[:1])
        assert_images_close(expected[1:], both[1:])
        assert_images_close(plain, G.synthesis(ws))
    assert "synthesis.input.camera" not in G.state_dict()  # the camera is not part of the weights


def test_camera_translation_shifts_the_picture() -> None:
    """Moving the camera by k / resolution shifts the picture by k pixels: the interior matches the
    shifted still frame (config t is translation-equivariant), for whole samples of the coarsest
    grid and for a single pixel (a fraction of a coarse sample)."""
    G = ours("t", resolution=32)
    ws = G.mapping(z_batch(1), truncation_psi=PSI).detach()
    res = G.img_resolution
    m = 4  # pixels next to the border see the grid's edge
    with torch.no_grad():
        still = G.synthesis(ws)
        scale = float(still.std())
        for step in (res // G.synthesis.input.sampling_rate, 1):
            G.set_camera(translate=(step / res, 0.0))
            right = G.synthesis(ws)
            G.set_camera(translate=(0.0, -step / res))
            up = G.synthesis(ws)
            inner = still[..., m:-m, m:-m - step]
            assert float((right[..., m:-m, m + step:-m] - inner).abs().max()) < 0.01 * scale
            assert float((up[..., m:-m - step, m:-m] - still[..., m + step:-m, m:-m]).abs().max()) < 0.01 * scale
            # Control: the unshifted comparison is far off, so the test can fail.
            assert float((right[..., m:-m, m:-m - step] - inner).abs().max()) > 0.1 * scale


# --------------------------------------------------------------------------------------------
# Widescreen


@pytest.mark.parametrize("aspect, size", [(16 / 9, (56, 32)), (4 / 3, (42, 32)), (1.0, (32, 32)), (9 / 16, (32, 56))])
def test_frame_sizes(aspect: float, size: tuple[int, int]) -> None:
    assert frame_size(32, aspect) == size
    G = ours("t", resolution=32)
    ws = G.mapping(z_batch(1)).detach()
    with torch.no_grad():
        assert tuple(G.synthesis(ws, aspect=aspect).shape) == (1, 3, size[1], size[0])
    assert frame_size(256, 16 / 9) == (456, 256) and frame_size(1024, 9 / 16) == (1024, 1820)


@pytest.mark.parametrize("cfg, aspect", [("t", 16 / 9), ("r", 16 / 9), ("t", 9 / 16)])
def test_widescreen_centre_is_the_square_picture_and_sides_are_new(cfg: str, aspect: float) -> None:
    G = ours(cfg, resolution=32)
    ws = G.mapping(z_batch(1), truncation_psi=PSI).detach()
    with torch.no_grad():
        square = G.synthesis(ws)
        wide = G.synthesis(ws, aspect=aspect)
    if aspect < 1:  # compare as if landscape
        square, wide = square.transpose(2, 3), wide.transpose(2, 3)
    e = (wide.shape[3] - 32) // 2
    centre = wide[..., e:e + 32]
    scale = float(square.std())
    # The square picture is drawn the same (its layers' margins absorb the grid's border).
    assert float((centre - square).abs().max()) < TOL
    # The sides are new picture: neither blank, nor a copy of the square's opposite edge (a tile),
    # nor its mirror.
    left = wide[..., :e]
    assert float(left.std()) > 0.3 * scale
    for copy in (square[..., 32 - e:], square[..., :e].flip(3)):
        assert float((left - copy).abs().mean()) > 0.2 * scale


def test_bad_aspect_is_refused() -> None:
    G = ours("t", resolution=16)
    ws = G.mapping(z_batch(1)).detach()
    for aspect in (0.0, -1.0, float("nan"), 10.0, "16:9"):
        with pytest.raises(ValueError, match=r"aspect \(width / height\) must be a number"):
            G.synthesis(ws, aspect=aspect)


# --------------------------------------------------------------------------------------------
# Native files


def test_save_load_round_trip(tmp_path: Path) -> None:
    G = ours("r", resolution=16)
    with torch.no_grad():
        G.synthesis.input.transform.copy_(camera_matrix((0.05, 0.0), 5.0))  # a stored transform survives
    save_generator(tmp_path / "g", G, {"note": "test"})
    doc = json.loads((tmp_path / "g.json").read_text())
    assert doc["kind"] == "stylegan3" and doc["config"]["use_radial_filters"] is True
    H = load_generator(tmp_path / "g")
    assert isinstance(H, Generator) and H.config == G.config
    for k, v in G.state_dict().items():
        assert torch.equal(v, H.state_dict()[k]), k
    ws = G.mapping(z_batch(1)).detach()
    with torch.no_grad():
        assert torch.equal(G.synthesis(ws, aspect=4 / 3), H.synthesis(ws, aspect=4 / 3))
    # The StyleGAN2 loader names what the file holds; StyleGAN2 files still load through the dispatcher.
    with pytest.raises(CheckpointError, match="holds a 'stylegan3' network, expected 'stylegan2'"):
        stylegan2.load_generator(tmp_path / "g")
    sg2 = stylegan2.Generator(stylegan2.StyleGAN2Config(z_dim=8, w_dim=8, mapping_layers=1, mapping_hidden_dim=8,
                                                        resolution=8, channel_base=64, channel_max=8))
    save_generator(tmp_path / "g2", sg2)
    assert isinstance(load_generator(tmp_path / "g2"), stylegan2.Generator)


def test_load_refuses_other_kinds_and_bad_configs(tmp_path: Path) -> None:
    G = ours("t", resolution=16)
    save_generator(tmp_path / "g", G)
    doc = json.loads((tmp_path / "g.json").read_text())
    (tmp_path / "g.json").write_text(json.dumps({**doc, "kind": "latent_rnn"}))
    with pytest.raises(CheckpointError, match="holds a 'latent_rnn' network, not a generator"):
        load_generator(tmp_path / "g")
    (tmp_path / "g.json").write_text(json.dumps({**doc, "config": {**doc["config"], "conv_kernel": 0}}))
    with pytest.raises(CheckpointError, match="conv_kernel must be a positive integer"):
        load_generator(tmp_path / "g")


def test_prepare_generator_takes_the_plain_path() -> None:
    G = ours("t", resolution=16)
    fast = prepare_generator(G, torch.bfloat16)
    assert fast is G and not any(p.requires_grad for p in G.parameters())
    ws = G.mapping(z_batch(1)).detach()
    assert fast.synthesis(ws, noise_mode="const", aspect=16 / 9).dtype == torch.float32


# --------------------------------------------------------------------------------------------
# Bad files


def assert_one_line_error(rc: int, out: str, err: str, pattern: str) -> None:
    assert rc == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("vjapp convert: error: ") and "Traceback" not in err
    assert re.search(pattern, lines[0]), lines[0]


def test_bad_stylegan3_pickles_get_one_clear_line(tmp_path: Path, capsys) -> None:
    ref = reference("t", resolution=16)
    # A filter of the wrong length.
    bad = reference("t", resolution=16)
    name = next(n for n in bad.synthesis.layer_names if getattr(bad.synthesis, n).up_filter is not None)
    getattr(bad.synthesis, name).up_filter = torch.ones(3)
    assert_one_line_error(*convert(tmp_path, write_pickle(tmp_path / "f.pkl", bad), capsys),
                          rf"synthesis\.{name}\.up_filter has shape \(3,\)")
    # NaN weights.
    nan = reference("t", resolution=16)
    with torch.no_grad():
        nan.synthesis.input.weight[0, 0] = float("nan")
    assert_one_line_error(*convert(tmp_path, write_pickle(tmp_path / "n.pkl", nan), capsys),
                          r"synthesis\.input\.weight contains NaN")
    # Constructor arguments we do not know, and a conditional network.
    ref.init_kwargs["fancy_new_option"] = 1
    assert_one_line_error(*convert(tmp_path, write_pickle(tmp_path / "k.pkl", ref), capsys),
                          r"StyleGAN3 init_kwargs has arguments this importer does not know: \['fancy_new_option'\]")
    del ref.init_kwargs["fancy_new_option"]
    ref.init_kwargs["c_dim"] = 10
    assert_one_line_error(*convert(tmp_path, write_pickle(tmp_path / "c.pkl", ref), capsys),
                          r"conditional generators \(c_dim=10\) are not supported")
    # A missing layer.
    del ref.init_kwargs["c_dim"]
    short = reference("t", resolution=16)
    delattr(short.synthesis, short.synthesis.layer_names[2])
    assert_one_line_error(*convert(tmp_path, write_pickle(tmp_path / "m.pkl", short), capsys),
                          r"tensors do not match the network \(missing \['synthesis\.L2_")
    assert not list(tmp_path.glob("gen*"))


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="num_critical"):
        StyleGAN3Config(num_layers=2, num_critical=2)
    with pytest.raises(ValueError, match="resolution must be even"):
        StyleGAN3Config(resolution=31)
    with pytest.raises(ValueError, match="use_radial_filters"):
        StyleGAN3Config(use_radial_filters=1)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# The engine and `vjapp render` with a StyleGAN3 bundle


def stylegan3_bundle_dir(tmp_path: Path) -> Path:
    """The tiny test bundle's audio models and CLIP (W+ 8 x 64) driving a StyleGAN3 generator."""
    from model.audio_features import MelConfig
    from model.bundle import random_bundle, save_bundle

    bundle = random_bundle(
        resolution=32, channel_max=32, w_dim=64, mapping_layers=2, encoder_channels=(8, 16, 16, 16),
        hidden_dim=32, mel=MelConfig(sample_rate=16000, n_fft=512, hop_length=256, n_mels=32),
        model_rate=10.0, segment_seconds=0.5,
    )
    torch.manual_seed(0)
    G = Generator(StyleGAN3Config(z_dim=64, w_dim=64, resolution=32, num_layers=6, channel_base=256, channel_max=32))
    assert (G.num_ws, G.w_dim) == (bundle.info.num_ws, bundle.info.w_dim)
    bundle.generator = G.eval()
    return save_bundle(tmp_path / "sg3-bundle", bundle)


def test_render_cli_and_camera_with_a_stylegan3_bundle(tmp_path: Path, capsys) -> None:
    import soundfile as sf

    from model.bundle import load_bundle
    from vjapp.engine.controls import Camera, Controls, set_path
    from vjapp.engine.show import Show
    from vjapp.output.mp4 import probe_mp4

    root = stylegan3_bundle_dir(tmp_path)
    sr = 16000
    t = np.arange(sr) / sr
    sf.write(tmp_path / "in.wav", (0.5 * np.sin(2 * np.pi * 220 * t) * (t > 0.4)).astype(np.float32), sr)
    out = tmp_path / "out.mp4"
    rc = main(["render", str(tmp_path / "in.wav"), "-o", str(out), "--bundle", str(root), "--fps", "10",
               "--quiet", "--dtype", "bf16"])
    assert rc == 0, capsys.readouterr().err
    info = probe_mp4(out)
    assert info["error"] is None and (info["video"]["width"], info["video"]["height"]) == (32, 32)
    assert info["video"]["frames"] == 10
    # Widescreen through the app's aspect control: StyleGAN3 widens its grids.
    assert main(["render", str(tmp_path / "in.wav"), "-o", str(out), "--bundle", str(root), "--fps", "5",
                 "--quiet", "--aspect", "16:9", "--size", "64"]) == 0, capsys.readouterr().err
    video = probe_mp4(out)["video"]
    assert (video["width"], video["height"], video["frames"]) == (114, 64, 5)

    bundle = load_bundle(root)
    assert isinstance(bundle.generator, Generator)
    show = Show(bundle, torch.device("cpu"), torch.bfloat16)
    ws = bundle.generator.mapping(z_batch(1, seed=3).repeat(1, 4), truncation_psi=PSI).detach()
    show.apply(Controls(), 0.0, immediate=True)
    still = show.renderer.images(ws)
    moved = set_path(Controls(camera=Camera(x=0.25)), "camera.rotate", 30.0)  # as OSC /vjapp/camera/rotate does
    show.apply(moved, 0.0, immediate=True)
    turned = show.renderer.images(ws)
    assert float((turned - still).abs().max()) > 0.1 * float(still.std())
    expected = bundle.generator.synthesis(ws, camera=camera_matrix((0.25, 0.0), 30.0))
    assert_images_close(expected, turned)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(conv_kernel="3"), "conv_kernel must be an integer"),
        (dict(first_cutoff=True), "first_cutoff must be a number"),
        (dict(mapping_kwargs=dict(num_layers=2, layer_features=8)), r"mapping_kwargs\.layer_features"),
        (dict(synthesis_kwargs=dict(channel_base=256)), "takes its synthesis arguments flat"),
        (dict(num_critical=9), "num_critical"),
        (dict(img_resolution=15), "resolution must be even"),
        (dict(mapping_kwargs=dict(w_avg_beta=None)), "w_avg"),
    ],
)
def test_unsupported_stylegan3_kwargs_are_refused(change, message) -> None:
    ref = reference("t", resolution=16)
    with pytest.raises(UnsupportedCheckpoint, match=message):
        generator_from_nvidia({**ref.init_kwargs, **change}, ref.state_dict())


def test_camera_moves_land_on_the_beat_when_quantised() -> None:
    from vjapp.audio.rhythm import TapTempo
    from vjapp.engine.controls import Controls, set_path
    from vjapp.engine.quantize import ChangeQuantizer

    tap = TapTempo()
    for t in (0.0, 0.5, 1.0):
        tap.tap(t)
    q = ChangeQuantizer()
    shown = set_path(Controls(), "rhythm.quantize", "beat")
    applied = q.submit(shown, set_path(shown, "camera.x", 0.5), 1.1, tap.beat_at(1.1))
    assert applied.camera.x == 0.0 and q.due(1.3) is None
    landed = q.due(1.5)
    assert landed is not None and landed.camera.x == 0.5


def test_kicks_push_the_stylegan3_camera(tmp_path: Path) -> None:
    """The rhythm layer drives the camera: the low band's pulse pushes it sideways (mid turns it),
    live (Show.frame_at) and in render (per-frame cameras), and not with the rhythm layer off."""
    from model.bundle import load_bundle
    from vjapp.engine.controls import Controls
    from vjapp.engine.show import Show

    bundle = load_bundle(stylegan3_bundle_dir(tmp_path))
    show = Show(bundle, torch.device("cpu"), torch.float32)
    controls = Controls()
    controls = controls.replace(rhythm=controls.rhythm.replace(camera_turn=20.0))
    show.apply(controls, 0.0, immediate=True)
    assert show.camera_now() == (0.0, 0.0, 0.0)
    show.listen([[1.0, 0.0, 0.0]] * 5, 0.01, 1.0)  # a kick: the low band's envelope rises
    x, y, turn = show.camera_now()
    assert 0.6 * controls.rhythm.camera_push < x <= controls.rhythm.camera_push and y == 0.0 and turn == 0.0
    show.listen([[0.0, 1.0, 0.0]] * 5, 0.01, 1.0)  # a mid-band onset turns it
    assert show.camera_now()[2] > 10.0
    ws = bundle.generator.mapping(z_batch(1, seed=5).repeat(1, 4), truncation_psi=PSI).detach()
    pushed = show.renderer.images(ws, cameras=[show.camera_now()])
    cx, cy, cr = show.camera_now()
    assert_images_close(bundle.generator.synthesis(ws, camera=camera_matrix((cx, cy), cr)), pushed)
    still = show.renderer.images(ws, cameras=[(0.0, 0.0, 0.0)])
    assert float((pushed - still).abs().max()) > 0.1 * float(still.std())
    show.apply(controls.replace(rhythm=controls.rhythm.replace(amount=0.0)), 0.0, immediate=True)
    assert show.camera_now() == (0.0, 0.0, 0.0)  # the rhythm layer off: the camera stays put


def test_a_stylegan3_pickle_plays_in_render_with_sound_meaning_and_beats(tmp_path: Path, monkeypatch) -> None:
    """`vjapp render --bundle G.pkl` of a StyleGAN3-t pickle: converted, its latent atlas built and
    cached beside the imported bundle, and the frames move with the sound (scene + kicks)."""
    import av
    import soundfile as sf

    from model.bundle import read_bundle_info

    G = reference("t")
    with torch.no_grad():  # w that differ with z and move the picture, as a trained network's do (at random
        # init the mapping's 0.01 learning-rate gain makes every w nearly the same)
        for name, p in G.mapping.named_parameters():
            if name.endswith("weight"):
                p.mul_(100.0)
        G.synthesis.input.affine.weight.normal_(0, 0.3, generator=torch.Generator().manual_seed(4))
    pkl = write_pickle(tmp_path / "sg3t.pkl", G)
    monkeypatch.setenv("VJAPP_IMPORT_DIR", str(tmp_path / "imp"))
    sr = 22050
    t = np.arange(int(2.0 * sr)) / sr
    kicks = np.exp(-((t % 0.5) * 30.0)) * np.sin(2 * np.pi * 60 * t)
    wav = tmp_path / "kick.wav"
    sf.write(wav, (0.6 * kicks + 0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sr)
    out = tmp_path / "out.mp4"
    assert main(["render", str(wav), "-o", str(out), "--bundle", str(pkl), "--fps", "10", "--atlas-samples", "24",
                 "--quiet", "--device", "cpu"]) == 0
    root = tmp_path / "imp" / "bundles" / "sg3t"
    assert read_bundle_info(root).num_ws == G.num_ws
    assert list((root / "cache").glob("atlas-*.safetensors"))  # the sound's meaning had an atlas to go to
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24").astype(np.float32) for f in c.decode(video=0)]
    assert len(frames) == 20
    assert np.mean([np.abs(b - a).mean() for a, b in zip(frames, frames[1:])]) > 0.5


def test_a_dropped_stylegan3_pickle_plays_in_the_app_with_its_atlas(make_app, qtbot, tmp_path: Path) -> None:
    """Drag a StyleGAN3-t pickle onto the output window: it plays at once (rhythm layer, camera
    pushed by kicks), its atlas is built in a child process and attached for the sound's meaning."""
    from test_anygen import _drop

    G = reference("t")
    with torch.no_grad():
        for name, p in G.mapping.named_parameters():
            if name.endswith("weight"):
                p.mul_(100.0)
    pkl = write_pickle(tmp_path / "sg3t.pkl", G)
    ctx = make_app(atlas_samples=16, size=64)
    first = ctx.engine
    _drop(ctx.output, pkl)
    qtbot.waitUntil(lambda: ctx.engine is not first and ctx.bundle.info.num_ws == G.num_ws, timeout=120_000)
    assert isinstance(ctx.bundle.generator, Generator)
    qtbot.waitUntil(lambda: ctx.engine.frames.stamp > 0, timeout=60_000)
    qtbot.waitUntil(lambda: ctx.atlas_state == "attached", timeout=180_000)
    show = ctx.engine.show
    assert show.sound.scene_layer is not None and len(show.atlas) == 16
    assert show.renderer.has_camera
