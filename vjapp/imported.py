"""Any generator plays: a bundle around an imported generator, without audio models of its shape.

:func:`bundle_for_generator` saves the generator with CLIP and F_a of a bundle that already plays
(F_a maps sound into CLIP space and the latent atlas maps CLIP space to this generator, so the W+
shape does not matter), plus that bundle's E_a and predictor only when their W+ shape is this
generator's. A CLIP named by the user (real OpenCLIP weights from a local file) replaces the
playing bundle's; F_a is then dropped unless it was trained for that CLIP (the sound's meaning
needs an F_a trained for it: ``vjapp-train adapt`` / ``clip_audio``), and text prompts still steer
through the atlas. :func:`import_generator` does it from a .pkl/.pt file (``vjapp render``).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from pathlib import Path
from typing import Any

from model.bundle import Bundle, save_bundle

log = logging.getLogger(__name__)

GENERATOR_FILES = (".pkl", ".pt", ".pth")  # what `vjapp convert` reads


def imported_dir() -> Path:
    """Where ``vjapp render --bundle model.pkl`` keeps converted generators and their bundles
    (``$VJAPP_IMPORT_DIR``, else the user cache)."""
    env = os.environ.get("VJAPP_IMPORT_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "vjapp" / "imported"


def is_generator_file(path: str | Path | None) -> bool:
    return path is not None and Path(path).is_file() and Path(path).suffix.lower() in GENERATOR_FILES


def _same_clip(source: dict[str, Any], arch: str, path: str) -> bool:
    return (source.get("kind") == "openclip" and source.get("arch") == arch
            and Path(source.get("weights", "")).expanduser().resolve() == Path(path).expanduser().resolve())


def bundle_for_generator(G: Any, base: Bundle, target: str | Path, source_name: str,
                         clip: tuple[str, str] | None = None, base_name: str = "the bundle playing") -> Path:
    """Save ``G`` + CLIP/F_a of ``base`` (+ its E_a/predictor when the W+ shapes match) at ``target``.

    ``clip``: ``(arch, weights path)`` of real OpenCLIP weights to use instead of ``base``'s CLIP.
    """
    info = base.info
    parts: dict[str, Any] = {}
    same_clip = True
    if clip is not None:
        from model.clip import load_clip

        same_clip = _same_clip(info.clip_source, *clip)
        parts["clip"] = load_clip(clip[0], clip[1], "cpu")
    elif base.clip is not None:
        parts["clip"] = copy.deepcopy(base.clip).to("cpu")
    if same_clip and base.audio_encoder is not None and "clip" in parts:
        parts["audio_encoder"] = copy.deepcopy(base.audio_encoder).to("cpu")
    same_shape = (G.num_ws, G.w_dim) == (info.num_ws, info.w_dim)
    if same_shape and base.sound_inversion is not None and base.predictor is not None:
        for name in ("sound_inversion", "predictor"):
            parts[name] = copy.deepcopy(getattr(base, name)).to("cpu")
    trained = dict(info.trained, generator=True)
    if not same_clip:
        trained["clip"] = True  # real OpenCLIP weights named by the user
    held = ("generator",) + tuple(parts)
    note = (f"generator imported from {source_name}; plays with the rhythm layer and the latent atlas "
            f"(CLIP {'and F_a ' if 'audio_encoder' in parts else ''}from "
            f"{base_name if same_clip else 'the weights named by --clip'}). "
            + ("E_a/predictor of the same W+ shape kept." if "predictor" in parts else "No E_a/predictor of its W+ shape."))
    new_info = dataclasses.replace(
        info, num_ws=G.num_ws, w_dim=G.w_dim, resolution=G.img_resolution, output_size=0, trained=trained,
        layer_groups=info.layer_groups if same_shape else (),
        embed_dim=parts["clip"].embed_dim if "clip" in parts else info.embed_dim, parts=held, notes=note,
    )
    root = save_bundle(target, Bundle(new_info, G, **parts))
    log.info("built bundle %s (%s) around the imported generator %s", root, ", ".join(held), source_name)
    return root


def import_generator(src: str | Path, base: Bundle, work_dir: str | Path, clip: tuple[str, str] | None = None,
                     base_name: str = "the default bundle") -> Path:
    """Convert ``src`` (.pkl/.pt, read safely) into ``work_dir/<stem>`` and build its bundle there;
    returns the bundle directory. Raises CheckpointError / UnsupportedCheckpoint for bad files."""
    from vjapp.convert import convert_checkpoint

    src = Path(src)
    work = Path(work_dir)
    result = convert_checkpoint(src, work / "converted" / src.stem, overwrite=True)
    return bundle_for_generator(result.generator, base, work / "bundles" / src.stem, src.name, clip, base_name)
