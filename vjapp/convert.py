"""``vjapp convert SRC -o OUT``: import a foreign StyleGAN2 / StyleGAN3 generator into the native format.

Reads an NVIDIA StyleGAN2-ADA / StyleGAN3 network pickle (``.pkl``; StyleGAN3 configs t and r
too) or a rosinality/stylegan2-pytorch checkpoint (``.pt``) *safely* (see :mod:`model.safe_pickle`:
nothing in the file is executed), rebuilds the generator as :class:`model.stylegan2.Generator`
or :class:`model.stylegan3.Generator` and writes OUT.safetensors + OUT.json, recording the source file's name and sha256.

Converting is done once, before a show; the app itself loads native files only.

This module is imported whenever the ``vjapp`` parser is built, so it imports torch and the
model code only inside :func:`run` / :func:`convert_checkpoint`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model.generators import AnyGenerator as Generator

log = logging.getLogger(__name__)

PROG = "vjapp convert"
FORMATS = ("auto", "nvidia-pkl", "rosinality-pt")
NVIDIA_NETWORKS = ("G_ema", "G")


@dataclasses.dataclass
class ConvertResult:
    """What one conversion found and wrote."""

    source: Path
    source_format: str  # "nvidia-pkl" | "rosinality-pt"
    source_sha256: str
    network: str  # which network of the file ("G_ema", "G", "g_ema")
    source_class: str  # e.g. "training.networks_stylegan2.Generator"
    generator: "Generator"
    paths: tuple[Path, Path]  # (weights, config)

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.generator.parameters())


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def output_stem(src: Path, out: Path) -> Path:
    """OUT may be a stem, a .json/.safetensors path, or an existing directory (then OUT/SRC-stem)."""
    if out.is_dir():
        return out / src.stem
    return out


def _build_generator(src: Path, fmt: str, network: str) -> tuple["Generator", str, str]:
    """Read ``src`` safely and rebuild its generator: ``(G, network, source_class)``."""
    from model.formats import CheckpointError
    from model.import_stylegan import generator_from_nvidia, generator_from_rosinality
    from model.safe_pickle import (
        PersistentRecord,
        check_finite,
        load_nvidia_pickle,
        load_rosinality_checkpoint,
        record_init_kwargs,
        record_state_dict,
    )

    if fmt == "nvidia-pkl":
        data = load_nvidia_pickle(src)
        record = data.get(network)
        if not isinstance(record, PersistentRecord):
            have = [k for k in NVIDIA_NETWORKS if isinstance(data.get(k), PersistentRecord)]
            raise CheckpointError(f"{src}: has no {network!r} network (it has {have})")
        module_name = record.module_name  # guessed from the stored source text, never run
        source_class = record.class_name if module_name == "unknown" else f"{module_name}.{record.class_name}"
        init_kwargs = record_init_kwargs(record)
        state = record_state_dict(record)
        check_finite(state, f"{src} ({network})")
        return generator_from_nvidia(init_kwargs, state, class_name=source_class), network, source_class

    ckpt = load_rosinality_checkpoint(src)
    check_finite(ckpt["g_ema"], f"{src} (g_ema)")
    latent_avg = ckpt.get("latent_avg")
    if latent_avg is not None and hasattr(latent_avg, "is_floating_point"):
        check_finite({"latent_avg": latent_avg}, str(src))
    return generator_from_rosinality(ckpt), "g_ema", "rosinality.model.Generator"


def convert_checkpoint(
    src: str | Path,
    out: str | Path,
    source_format: str = "auto",
    network: str = "G_ema",
    overwrite: bool = False,
) -> ConvertResult:
    """Convert ``src`` to a native generator checkpoint at ``out`` and verify it reloads.

    Raises :class:`model.formats.CheckpointError` for unreadable, corrupt or hostile files and
    :class:`model.import_stylegan.UnsupportedCheckpoint` for well-formed networks we cannot
    reproduce (conditional, non-skip StyleGAN2, ...).
    """
    import torch

    from model.formats import CheckpointError, network_paths
    from model.import_stylegan import UnsupportedCheckpoint
    from model.safe_pickle import detect_format
    from model.generators import load_generator, save_generator
    from vjapp import __version__

    src = Path(src)
    detected = detect_format(src)
    if detected == "native":
        raise CheckpointError(f"{src}: already a native vjapp checkpoint; nothing to convert")
    fmt = detected if source_format == "auto" else source_format
    if fmt != detected:
        raise CheckpointError(f"{src}: asked to read it as {fmt}, but its content says {detected}")
    if fmt == "nvidia-pkl" and network not in NVIDIA_NETWORKS:
        raise CheckpointError(f"unknown network {network!r}; choose one of {list(NVIDIA_NETWORKS)}")

    stem = output_stem(src, Path(out))
    targets = network_paths(stem)
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise CheckpointError(f"{existing[0]} already exists (pass --force to overwrite)")
    if any(p.resolve() == src.resolve() for p in targets):
        raise CheckpointError(f"{src}: output would overwrite the source file")

    try:
        G, network_used, source_class = _build_generator(src, fmt, network)
    except (CheckpointError, UnsupportedCheckpoint) as exc:
        if str(exc).startswith(str(src)):
            raise
        raise type(exc)(f"{src}: {exc}") from exc
    except (IndexError, KeyError, RuntimeError, TypeError, AttributeError) as exc:
        # Tensors of unexpected rank/shape that slipped past the structural checks.
        raise CheckpointError(f"{src}: tensors do not form a StyleGAN generator ({type(exc).__name__}: {exc})") from exc

    sha = file_sha256(src)
    metadata: dict[str, Any] = {
        "source_file": src.name,
        "source_sha256": sha,
        "source_format": fmt,
        "source_network": network_used,
        "source_class": source_class,
        "converted_by": f"vjapp {__version__}",
    }
    paths = save_generator(stem, G, metadata)
    log.info("wrote %s and %s", *paths)

    # The show will load these files: prove now that they load and hold exactly these weights.
    reloaded = load_generator(paths[0])
    expected = G.state_dict()
    for name, value in reloaded.state_dict().items():
        if not torch.equal(value, expected[name]):
            raise CheckpointError(f"{paths[0]}: written weights differ from the converted ones at {name}")
    return ConvertResult(src, fmt, sha, network_used, source_class, G, paths)


def summary_lines(result: ConvertResult) -> list[str]:
    """The human-readable report ``vjapp convert`` prints."""
    cfg = result.generator.config
    if hasattr(cfg, "num_critical"):  # StyleGAN3
        kind = "radial filters, 1x1 convs (config r)" if cfg.use_radial_filters else f"{cfg.conv_kernel}x{cfg.conv_kernel} convs (config t)"
        arch = f"StyleGAN3 generator, {kind}, {cfg.img_channels} channels"
        mapping = f"{cfg.mapping_layers} (lr multiplier {cfg.mapping_lr_multiplier:g})"
        layers = f"; {cfg.num_layers} layers"
    else:
        arch = f"StyleGAN2 generator, 'skip' synthesis, {cfg.img_channels} channels"
        mapping = f"{cfg.mapping_layers} (hidden {cfg.mapping_hidden_dim}, lr multiplier {cfg.mapping_lr_multiplier:g})"
        layers = ""
    rows = [
        ("source", f"{result.source} ({result.source_format})"),
        ("sha256", result.source_sha256),
        ("network", f"{result.network} ({result.source_class})"),
        ("architecture", arch),
        ("resolution", f"{cfg.resolution}x{cfg.resolution}"),
        ("num_ws", str(cfg.num_ws)),
        ("w_dim", str(cfg.w_dim)),
        ("z_dim", str(cfg.z_dim)),
        ("mapping layers", mapping),
        ("channels", f"base {cfg.channel_base}, max {cfg.channel_max}{layers}"),
        ("parameters", f"{result.parameter_count:,}"),
        ("wrote", str(result.paths[0])),
        ("", str(result.paths[1])),
    ]
    width = max(len(k) for k, _ in rows) + 1
    return [f"{(k + ':') if k else '':<{width}} {v}" for k, v in rows]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="NVIDIA StyleGAN2-ADA / StyleGAN3 .pkl or rosinality .pt generator checkpoint")
    parser.add_argument("-o", "--output", required=True, type=Path,
                        help="output stem (writes STEM.safetensors + STEM.json), or an existing directory")
    parser.add_argument("--format", dest="source_format", choices=FORMATS, default="auto",
                        help="source format; 'auto' judges by the file's content")
    parser.add_argument("--network", choices=NVIDIA_NETWORKS, default="G_ema",
                        help="which network of an NVIDIA pickle to import")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def run(args: argparse.Namespace) -> int:
    from model.formats import CheckpointError
    from model.import_stylegan import UnsupportedCheckpoint

    try:
        result = convert_checkpoint(args.src, args.output, source_format=args.source_format,
                                    network=args.network, overwrite=args.force)
    except (CheckpointError, UnsupportedCheckpoint) as exc:
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except OSError as exc:  # unwritable output directory, disk full, ...
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    for line in summary_lines(result):
        print(line)
    return 0
