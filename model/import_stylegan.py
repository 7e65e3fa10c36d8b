"""Map foreign StyleGAN generator weights onto :class:`model.stylegan2.Generator` or
:class:`model.stylegan3.Generator`.

Three sources are understood:

* NVIDIA stylegan2-ada-pytorch / stylegan3 (``networks_stylegan2``) ``G_ema``: its
  ``init_kwargs`` (the constructor arguments kept in the pickle) and its flat state dict. Our
  generator uses NVIDIA's parameter names, so the mapping is key for key.
* NVIDIA stylegan3 (``networks_stylegan3``, configs t and r) ``G_ema``: likewise key for key
  (:func:`stylegan3_from_nvidia`); :func:`generator_from_nvidia` tells the two apart by the class
  name, the constructor arguments and the tensor names.
* rosinality/stylegan2-pytorch checkpoints (``{'g_ema': state_dict, 'latent_avg': ...}``):
  hyperparameters are inferred from tensor shapes and every tensor is renamed and reshaped.
  rosinality's up-sampling conv (``conv_transpose2d`` with the weight transposed, then ``Blur``)
  is the same operation as NVIDIA's ``conv2d_resample(up=2, flip_weight=False)``, so weights
  carry over without a spatial flip (the flip in their ``convert_weight.py`` undoes the
  TensorFlow convention, which NVIDIA's own ``legacy.py`` also flips). The fidelity tests
  check this against literal re-implementations of both.

Reading the files is not done here: ``model/safe_pickle.py`` (NVIDIA ``.pkl``) and a
``weights_only`` ``torch.load`` (rosinality ``.pt``) produce the plain dicts these functions take.
Anything we cannot reproduce exactly raises :class:`UnsupportedCheckpoint`.
"""

from __future__ import annotations

import logging
import re
from typing import Any, Mapping

import torch

from model.formats import CheckpointError, check_state_dict
from model.stylegan2 import Generator, StyleGAN2Config, setup_filter
from model.stylegan3 import Generator as StyleGAN3Generator
from model.stylegan3 import StyleGAN3Config

log = logging.getLogger(__name__)


class UnsupportedCheckpoint(ValueError):
    """A well-formed checkpoint of a network this importer cannot reproduce exactly."""


# Keyword arguments of NVIDIA's generators that change nothing we compute (precision/layout).
_HARMLESS_SYNTHESIS_KWARGS = {"num_fp16_res", "fp16_channels_last", "fused_modconv_default", "channels_last"}
_SYNTHESIS_KWARGS = {"channel_base", "channel_max", "conv_clamp", "architecture", "resample_filter",
                     "use_noise", "activation", "kernel_size"} | _HARMLESS_SYNTHESIS_KWARGS
_MAPPING_KWARGS = {"num_layers", "embed_features", "layer_features", "activation", "lr_multiplier", "w_avg_beta"}
_TOP_KWARGS = {"z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs", "synthesis_kwargs"}
# Constructor arguments that only StyleGAN3's (alias-free) generator has.
_STYLEGAN3_KWARGS = {"magnitude_ema_beta", "conv_kernel", "use_radial_filters", "num_layers", "num_critical",
                     "first_cutoff", "first_stopband", "last_stopband_rel", "margin_size", "output_scale",
                     "filter_size", "lrelu_upsampling"}
_STYLEGAN3_MESSAGE = "a StyleGAN3 generator, not a StyleGAN2 one (read it with stylegan3_from_nvidia)"
# stylegan3's networks_stylegan3.Generator: its flat synthesis and layer arguments.
_STYLEGAN3_SYNTHESIS_KWARGS = {"channel_base", "channel_max", "num_layers", "num_critical", "first_cutoff",
                               "first_stopband", "last_stopband_rel", "margin_size", "output_scale", "conv_kernel",
                               "filter_size", "lrelu_upsampling", "use_radial_filters", "conv_clamp",
                               "magnitude_ema_beta", "num_fp16_res"}
_STYLEGAN3_MAPPING_KWARGS = {"num_layers", "lr_multiplier", "w_avg_beta"}

# What SynthesisBlock clamps at when the Generator got no conv_clamp: the two NVIDIA codebases differ.
# stylegan2-ada-pytorch, training/networks.py: ``conv_clamp = None`` (its train.py always passes a
# value, in the nested ``synthesis_kwargs``). stylegan3, training/networks_stylegan2.py:
# ``conv_clamp = 256``; its Generator takes the synthesis arguments flat and its train.py passes
# conv_clamp only with ``--fp32`` (as None), so a pickle without it clamps at 256.
_ADA_DEFAULT_CONV_CLAMP: float | None = None
_STYLEGAN3_REPO_DEFAULT_CONV_CLAMP: float | None = 256.0


def _as_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise UnsupportedCheckpoint(f"NVIDIA init_kwargs: {name} must be an integer, got {value!r}")
    return int(value)


def config_from_nvidia_kwargs(init_kwargs: Mapping[str, Any], class_name: str | None = None) -> StyleGAN2Config:
    """Our config for an NVIDIA ``G_ema`` from its ``init_kwargs`` (and, if known, its class name).

    Accepts both layouts: stylegan2-ada-pytorch (synthesis arguments in ``synthesis_kwargs``)
    and stylegan3's ``networks_stylegan2`` (synthesis arguments at top level). The layout also
    tells which code built the network, hence what an absent ``conv_clamp`` means: None for
    stylegan2-ada-pytorch, 256 for stylegan3's ``networks_stylegan2`` (a Generator given no
    synthesis arguments at all reads as the latter; ada's ``train.py`` always writes them).
    Raises UnsupportedCheckpoint for StyleGAN3, conditional (c_dim > 0) and non-'skip' generators.
    """
    if not isinstance(init_kwargs, Mapping):
        raise UnsupportedCheckpoint(f"NVIDIA init_kwargs must be a dict, got {type(init_kwargs).__name__}")
    if class_name is not None and "stylegan3" in class_name and "networks_stylegan2" not in class_name:
        raise UnsupportedCheckpoint(f"{_STYLEGAN3_MESSAGE}; got class {class_name}")
    top = dict(init_kwargs)
    if _STYLEGAN3_KWARGS & set(top):
        raise UnsupportedCheckpoint(f"{_STYLEGAN3_MESSAGE}; init_kwargs has {sorted(_STYLEGAN3_KWARGS & set(top))}")
    missing = {"z_dim", "w_dim", "img_resolution", "img_channels"} - set(top)
    if missing:
        raise UnsupportedCheckpoint(f"NVIDIA init_kwargs lack {sorted(missing)}")
    mapping = dict(top.pop("mapping_kwargs", None) or {})
    nested = "synthesis_kwargs" in top
    synthesis = dict(top.pop("synthesis_kwargs", None) or {})
    # stylegan3's networks_stylegan2.Generator takes the synthesis arguments flat.
    for key in list(top):
        if key in _SYNTHESIS_KWARGS:
            synthesis[key] = top.pop(key)
    unknown = sorted(set(top) - _TOP_KWARGS)
    unknown += sorted(f"synthesis_kwargs.{k}" for k in set(synthesis) - _SYNTHESIS_KWARGS)
    unknown += sorted(f"mapping_kwargs.{k}" for k in set(mapping) - _MAPPING_KWARGS)
    if unknown:
        raise UnsupportedCheckpoint(f"NVIDIA init_kwargs has arguments this importer does not know: {unknown}")

    c_dim = _as_int(top.get("c_dim", 0) or 0, "c_dim")
    if c_dim > 0:
        raise UnsupportedCheckpoint(f"conditional generators (c_dim={c_dim}) are not supported; only c_dim=0")
    architecture = synthesis.get("architecture", "skip")
    if architecture != "skip":
        raise UnsupportedCheckpoint(f"synthesis architecture {architecture!r} is not supported; only 'skip'")
    if synthesis.get("use_noise", True) is not True:
        raise UnsupportedCheckpoint("generators without noise inputs (use_noise=False) are not supported")
    for kwargs, where in ((synthesis, "synthesis"), (mapping, "mapping")):
        if kwargs.get("activation", "lrelu") != "lrelu":
            raise UnsupportedCheckpoint(f"{where} activation {kwargs['activation']!r} is not supported; only 'lrelu'")
    if synthesis.get("kernel_size", 3) != 3:
        raise UnsupportedCheckpoint(f"synthesis kernel_size {synthesis['kernel_size']!r} is not supported; only 3")
    if mapping.get("w_avg_beta", 0.995) is None:
        raise UnsupportedCheckpoint("mapping without a tracked w_avg (w_avg_beta=None) is not supported")

    w_dim = _as_int(top["w_dim"], "w_dim")
    layer_features = mapping.get("layer_features")
    if "conv_clamp" in synthesis:
        conv_clamp = synthesis["conv_clamp"]
    else:
        conv_clamp = _ADA_DEFAULT_CONV_CLAMP if nested else _STYLEGAN3_REPO_DEFAULT_CONV_CLAMP
        log.info("NVIDIA init_kwargs store no conv_clamp; using %s, the default of %s", conv_clamp,
                 "stylegan2-ada-pytorch's networks.py" if nested else "stylegan3's networks_stylegan2.py")
    try:
        return StyleGAN2Config(
            z_dim=_as_int(top["z_dim"], "z_dim"),
            w_dim=w_dim,
            mapping_layers=_as_int(mapping.get("num_layers", 8), "mapping_kwargs.num_layers"),
            mapping_hidden_dim=w_dim if layer_features is None else _as_int(layer_features, "layer_features"),
            mapping_lr_multiplier=float(mapping.get("lr_multiplier", 0.01)),
            w_avg_beta=float(mapping.get("w_avg_beta", 0.995)),
            resolution=_as_int(top["img_resolution"], "img_resolution"),
            img_channels=_as_int(top["img_channels"], "img_channels"),
            channel_base=_as_int(synthesis.get("channel_base", 32768), "channel_base"),
            channel_max=_as_int(synthesis.get("channel_max", 512), "channel_max"),
            conv_clamp=None if conv_clamp is None else float(conv_clamp),
            resample_filter=tuple(synthesis.get("resample_filter", (1, 3, 3, 1))),
        )
    except (ValueError, TypeError) as exc:
        raise UnsupportedCheckpoint(f"NVIDIA init_kwargs do not describe a valid StyleGAN2 generator: {exc}") from exc


def _float_state(state: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: {name} is a {type(value).__name__}, not a tensor")
        out[name] = value.detach().to(device="cpu", dtype=torch.float32).contiguous()
    return out


def is_nvidia_stylegan3(init_kwargs: Any, state: Mapping[str, Any], class_name: str | None = None) -> bool:
    """Whether an NVIDIA ``G_ema`` is a StyleGAN3 (alias-free) generator, by any of its class name
    (``training.networks_stylegan3...``), its StyleGAN3-only constructor arguments, or its tensors
    (``synthesis.input.*``, ``synthesis.L0_...``)."""
    if class_name is not None and "networks_stylegan3" in class_name:
        return True
    if isinstance(init_kwargs, Mapping) and _STYLEGAN3_KWARGS & set(init_kwargs):
        return True
    return any(str(k).startswith("synthesis.input.") or re.match(r"synthesis\.L\d+_", str(k)) for k in state)


def config_from_nvidia_stylegan3_kwargs(init_kwargs: Mapping[str, Any]) -> StyleGAN3Config:
    """Our config for an NVIDIA ``networks_stylegan3.Generator`` from its ``init_kwargs``.

    Absent arguments take the defaults of NVIDIA's constructors (which are our config's defaults,
    except ``mapping_kwargs.num_layers``: NVIDIA's MappingNetwork defaults to 2 as well).
    Raises UnsupportedCheckpoint for conditional generators and unknown arguments.
    """
    if not isinstance(init_kwargs, Mapping):
        raise UnsupportedCheckpoint(f"NVIDIA init_kwargs must be a dict, got {type(init_kwargs).__name__}")
    top = dict(init_kwargs)
    missing = {"z_dim", "w_dim", "img_resolution", "img_channels"} - set(top)
    if missing:
        raise UnsupportedCheckpoint(f"NVIDIA StyleGAN3 init_kwargs lack {sorted(missing)}")
    mapping = dict(top.pop("mapping_kwargs", None) or {})
    synthesis = {k: top.pop(k) for k in list(top) if k in _STYLEGAN3_SYNTHESIS_KWARGS}
    unknown = sorted(set(top) - _TOP_KWARGS - {"synthesis_kwargs"})
    unknown += sorted(f"mapping_kwargs.{k}" for k in set(mapping) - _STYLEGAN3_MAPPING_KWARGS)
    if "synthesis_kwargs" in top:
        unknown.append("synthesis_kwargs (StyleGAN3 takes its synthesis arguments flat)")
    if unknown:
        raise UnsupportedCheckpoint(f"NVIDIA StyleGAN3 init_kwargs has arguments this importer does not know: {unknown}")
    c_dim = _as_int(top.get("c_dim", 0) or 0, "c_dim")
    if c_dim > 0:
        raise UnsupportedCheckpoint(f"conditional generators (c_dim={c_dim}) are not supported; only c_dim=0")
    if mapping.get("w_avg_beta", 0.998) is None:
        raise UnsupportedCheckpoint("mapping without a tracked w_avg (w_avg_beta=None) is not supported")
    synthesis.pop("num_fp16_res", None)  # precision only: we compute in float32
    defaults = StyleGAN3Config()
    try:
        fields: dict[str, Any] = {name: synthesis.get(name, getattr(defaults, name))
                                  for name in _STYLEGAN3_SYNTHESIS_KWARGS - {"num_fp16_res"}}
        for name in ("channel_base", "channel_max", "num_layers", "num_critical", "margin_size", "conv_kernel",
                     "filter_size", "lrelu_upsampling"):
            fields[name] = _as_int(fields[name], name)
        for name in ("first_cutoff", "first_stopband", "last_stopband_rel", "output_scale", "magnitude_ema_beta"):
            if isinstance(fields[name], bool) or not isinstance(fields[name], (int, float)):
                raise UnsupportedCheckpoint(f"NVIDIA init_kwargs: {name} must be a number, got {fields[name]!r}")
        fields["use_radial_filters"] = bool(fields["use_radial_filters"])
        return StyleGAN3Config(
            z_dim=_as_int(top["z_dim"], "z_dim"),
            w_dim=_as_int(top["w_dim"], "w_dim"),
            mapping_layers=_as_int(mapping.get("num_layers", 2), "mapping_kwargs.num_layers"),
            mapping_lr_multiplier=float(mapping.get("lr_multiplier", 0.01)),
            w_avg_beta=float(mapping.get("w_avg_beta", 0.998)),
            resolution=_as_int(top["img_resolution"], "img_resolution"),
            img_channels=_as_int(top["img_channels"], "img_channels"),
            **fields,
        )
    except (ValueError, TypeError) as exc:
        if isinstance(exc, UnsupportedCheckpoint):
            raise
        raise UnsupportedCheckpoint(f"NVIDIA init_kwargs do not describe a valid StyleGAN3 generator: {exc}") from exc


def stylegan3_from_nvidia(init_kwargs: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> StyleGAN3Generator:
    """Build our StyleGAN3 generator from an NVIDIA ``G_ema``'s init_kwargs and flat state dict.

    The state holds every parameter and buffer NVIDIA keeps: the input's ``transform``, ``freqs``
    and ``phases``, each layer's ``magnitude_ema`` and its ``up_filter`` / ``down_filter`` (absent
    where the filter is the identity); they are loaded as they are, not re-derived.
    """
    config = config_from_nvidia_stylegan3_kwargs(init_kwargs)
    if any(str(k).startswith("mapping.embed.") for k in state):
        raise UnsupportedCheckpoint("conditional generators (mapping.embed) are not supported")
    G = StyleGAN3Generator(config)
    tensors = _float_state(state, "NVIDIA G_ema")
    check_state_dict(G, tensors, "NVIDIA StyleGAN3 G_ema")
    G.load_state_dict(tensors, strict=True)
    return G.eval()


def generator_from_nvidia(
    init_kwargs: Mapping[str, Any], state: Mapping[str, torch.Tensor], class_name: str | None = None
) -> Generator | StyleGAN3Generator:
    """Build our generator from an NVIDIA ``G_ema``'s init_kwargs and flat state dict (params + buffers):
    a :class:`model.stylegan3.Generator` for a StyleGAN3 network (:func:`is_nvidia_stylegan3`),
    else a :class:`model.stylegan2.Generator`."""
    if is_nvidia_stylegan3(init_kwargs, state, class_name):
        return stylegan3_from_nvidia(init_kwargs, state)
    config = config_from_nvidia_kwargs(init_kwargs, class_name)
    if any(k.startswith("mapping.embed.") for k in state):
        raise UnsupportedCheckpoint("conditional generators (mapping.embed) are not supported")
    G = Generator(config)
    tensors = _float_state(state, "NVIDIA G_ema")
    check_state_dict(G, tensors, "NVIDIA G_ema")
    G.load_state_dict(tensors, strict=True)
    return G.eval()


# ----------------------------------------------------------------------------------------------
# rosinality/stylegan2-pytorch


def channel_params_for(channels: Mapping[int, int]) -> tuple[int, int]:
    """``(channel_base, channel_max)`` with ``min(channel_base // r, channel_max) == channels[r]`` for all r.

    Prefers NVIDIA's round values (32768, 16384) when they fit; raises UnsupportedCheckpoint when
    no pair reproduces the table (e.g. rosinality channel_multiplier 4: 512 channels at 32 px
    but 1024 at 64 px).
    """
    cmax = max(channels.values())
    lo, hi = 1, 1 << 40
    for r, c in channels.items():
        if c == cmax:
            lo = max(lo, c * r)
        else:
            lo, hi = max(lo, c * r), min(hi, c * r + r - 1)
    for base in (32768, 16384, lo):
        if lo <= base <= hi and all(min(base // r, cmax) == c for r, c in channels.items()):
            return base, cmax
    raise UnsupportedCheckpoint(
        f"channel table {dict(sorted(channels.items()))} cannot be written as min(channel_base // res, channel_max)"
    )


def _need(state: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"rosinality checkpoint: missing tensor {key!r}")
    value = state[key]
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"rosinality checkpoint: {key!r} is a {type(value).__name__}, not a tensor")
    return value.detach().to(device="cpu", dtype=torch.float32)


def _check_blur(state: Mapping[str, torch.Tensor], taps: tuple[int, ...]) -> None:
    """rosinality stores its FIR kernels as buffers; we only reproduce the standard one."""
    expected = setup_filter(taps) * 4
    for key, value in state.items():
        if key.endswith("blur.kernel") or key.endswith("upsample.kernel"):
            if tuple(value.shape) != tuple(expected.shape) or not torch.allclose(value.float(), expected, atol=1e-6):
                raise UnsupportedCheckpoint(f"rosinality checkpoint: {key} is not the [1, 3, 3, 1] blur kernel")


# SWAGAN (their swagan.py, ``train.py --arch swagan``) keeps its Haar wavelet filters as buffers.
_WAVELET_BUFFER = re.compile(r"(?:^|\.)(?:iwt|dwt)\.(?:ll|lh|hl|hh)$")


def _refuse_other_architectures(ckpt: Mapping[str, Any], state: Mapping[Any, Any]) -> None:
    """rosinality's train.py also trains SWAGAN, whose g_ema looks like a 12-channel StyleGAN2."""
    args = ckpt.get("args")
    arch = getattr(args, "arch", None) if args is not None else None
    wavelet = [str(k) for k in state if _WAVELET_BUFFER.search(str(k))]
    if arch == "swagan" or wavelet:
        evidence = f"args.arch={arch!r}" if arch == "swagan" else f"wavelet buffers such as {wavelet[0]!r}"
        raise UnsupportedCheckpoint(
            f"rosinality checkpoint: a SWAGAN generator (--arch swagan; {evidence}) is not supported; "
            "only rosinality StyleGAN2 generators (--arch stylegan2) can be converted"
        )
    if arch not in (None, "stylegan2"):
        raise UnsupportedCheckpoint(
            f"rosinality checkpoint: architecture args.arch={arch!r} is not supported; "
            "only rosinality StyleGAN2 generators (--arch stylegan2) can be converted"
        )


def generator_from_rosinality(ckpt: Mapping[str, Any], n_mean_latent: int = 4096) -> Generator:
    """Build our generator from a rosinality/stylegan2-pytorch checkpoint dict.

    ``ckpt`` is ``{'g_ema': state_dict, 'latent_avg': [style_dim] (optional), ...}`` or a bare
    ``g_ema`` state dict. Without ``latent_avg``, ``w_avg`` is estimated as the mean W of
    ``n_mean_latent`` seeded z samples (what their generate.py does for truncation).
    SWAGAN checkpoints (``--arch swagan``) raise UnsupportedCheckpoint.
    """
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"rosinality checkpoint must be a dict, got {type(ckpt).__name__}")
    if "g_ema" in ckpt:
        state = ckpt["g_ema"]
    elif "style.1.weight" in ckpt:
        state = ckpt
    else:
        raise CheckpointError("rosinality checkpoint: no 'g_ema' state dict (keys: "
                              f"{sorted(map(str, ckpt))[:8]})")
    if not isinstance(state, Mapping):
        raise CheckpointError(f"rosinality checkpoint: 'g_ema' must be a state dict, got {type(state).__name__}")
    if any(str(k).startswith("module.") for k in state):
        state = {str(k)[len("module."):]: v for k, v in state.items()}
    _refuse_other_architectures(ckpt, state)

    # --- infer hyperparameters from shapes
    n_mlp = 0
    while f"style.{n_mlp + 1}.weight" in state:
        n_mlp += 1
    if n_mlp == 0:
        raise CheckpointError("rosinality checkpoint: no mapping layers style.1.weight ...")
    style_dim = _need(state, "style.1.weight").shape[1]
    w_dim = _need(state, f"style.{n_mlp}.weight").shape[0]
    n_rgbs = 0
    while f"to_rgbs.{n_rgbs}.conv.weight" in state:
        n_rgbs += 1
    resolution = 2 ** (n_rgbs + 2)
    const = _need(state, "input.input")  # [1, C, 4, 4]
    if const.ndim != 4 or const.shape[0] != 1 or tuple(const.shape[2:]) != (4, 4):
        raise CheckpointError(f"rosinality checkpoint: input.input has shape {tuple(const.shape)}, expected [1, C, 4, 4]")
    channels = {4: int(const.shape[1])}
    for i in range(n_rgbs):
        channels[2 ** (i + 3)] = int(_need(state, f"convs.{2 * i}.conv.weight").shape[1])
    img_channels = int(_need(state, "to_rgb1.conv.weight").shape[1])
    channel_base, channel_max = channel_params_for(channels)
    taps = (1, 3, 3, 1)
    _check_blur(state, taps)
    try:
        config = StyleGAN2Config(
            z_dim=style_dim, w_dim=w_dim, mapping_layers=n_mlp, mapping_hidden_dim=w_dim,
            mapping_lr_multiplier=0.01, resolution=resolution, img_channels=img_channels,
            channel_base=channel_base, channel_max=channel_max, conv_clamp=None, resample_filter=taps,
        )
    except ValueError as exc:
        raise UnsupportedCheckpoint(f"rosinality checkpoint does not describe a supported generator: {exc}") from exc

    # --- rename
    out: dict[str, torch.Tensor] = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = _need(state, f"style.{i + 1}.weight")
        out[f"mapping.fc{i}.bias"] = _need(state, f"style.{i + 1}.bias")

    def styled_conv(src: str, dst: str, noise_key: str) -> None:
        weight = _need(state, f"{src}.conv.weight")  # [1, O, I, k, k]
        if weight.ndim != 5 or weight.shape[0] != 1:
            raise CheckpointError(f"rosinality checkpoint: {src}.conv.weight has shape {tuple(weight.shape)}")
        out[f"{dst}.weight"] = weight[0]
        out[f"{dst}.affine.weight"] = _need(state, f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = _need(state, f"{src}.conv.modulation.bias")
        out[f"{dst}.noise_strength"] = _need(state, f"{src}.noise.weight").reshape([])
        out[f"{dst}.bias"] = _need(state, f"{src}.activate.bias")
        noise = _need(state, noise_key)  # [1, 1, r, r]
        out[f"{dst}.noise_const"] = noise.reshape(noise.shape[-2:])

    def to_rgb(src: str, dst: str) -> None:
        weight = _need(state, f"{src}.conv.weight")  # [1, C, I, 1, 1]
        if weight.ndim != 5 or weight.shape[0] != 1:
            raise CheckpointError(f"rosinality checkpoint: {src}.conv.weight has shape {tuple(weight.shape)}")
        out[f"{dst}.weight"] = weight[0]
        out[f"{dst}.affine.weight"] = _need(state, f"{src}.conv.modulation.weight")
        out[f"{dst}.affine.bias"] = _need(state, f"{src}.conv.modulation.bias")
        out[f"{dst}.bias"] = _need(state, f"{src}.bias").reshape(-1)

    out["synthesis.b4.const"] = const[0]
    styled_conv("conv1", "synthesis.b4.conv1", "noises.noise_0")
    to_rgb("to_rgb1", "synthesis.b4.torgb")
    for i in range(n_rgbs):
        res = 2 ** (i + 3)
        styled_conv(f"convs.{2 * i}", f"synthesis.b{res}.conv0", f"noises.noise_{2 * i + 1}")
        styled_conv(f"convs.{2 * i + 1}", f"synthesis.b{res}.conv1", f"noises.noise_{2 * i + 2}")
        to_rgb(f"to_rgbs.{i}", f"synthesis.b{res}.torgb")

    G = Generator(config)
    # Fixed buffers (FIR filters) come from our own construction; the blur kernels were checked above.
    for name, buf in G.named_buffers():
        if name.endswith("resample_filter"):
            out[name] = buf.clone()
    latent_avg = ckpt.get("latent_avg") if "g_ema" in ckpt else None
    if latent_avg is not None:
        if not isinstance(latent_avg, torch.Tensor) or latent_avg.numel() != w_dim:
            raise CheckpointError(f"rosinality checkpoint: latent_avg must be a tensor of {w_dim} values")
        out["mapping.w_avg"] = latent_avg.detach().to(torch.float32).reshape(w_dim)
    else:
        out["mapping.w_avg"] = torch.zeros(w_dim)
    check_state_dict(G, out, "rosinality checkpoint")
    G.load_state_dict(out, strict=True)
    if latent_avg is None:
        log.warning("rosinality checkpoint has no latent_avg; estimating w_avg from %d samples", n_mean_latent)
        with torch.no_grad():
            gen = torch.Generator().manual_seed(0)
            z = torch.randn([n_mean_latent, style_dim], generator=gen)
            G.mapping.w_avg.copy_(G.mapping(z)[:, 0].mean(dim=0))
    return G.eval()

