"""``python -m vjapp.atlas_build BUNDLE``: build a bundle's latent atlas (child process of the app).

Loads the bundle's generator and CLIP, builds the atlas with :func:`model.atlas.atlas_for` (so it
lands in the cache beside the bundle, where the engine's ``attach_atlas`` finds it) and prints one
line per batch::

    progress DONE TOTAL

then ``done N`` (or, on failure, ``error: MESSAGE`` and exit status 1). The app parses these lines
into its progress bar; the show plays on meanwhile. Offline ``vjapp render`` builds in-process.
"""

from __future__ import annotations

import argparse
import logging
import sys

from model.atlas import AtlasSettings

PROG = "python -m vjapp.atlas_build"
PROGRESS_PREFIX = "progress "
DONE_PREFIX = "done "
ERROR_PREFIX = "error: "


def parse_progress(line: str) -> tuple[int, int] | None:
    """``(done, total)`` of a ``progress DONE TOTAL`` line, else None."""
    if not line.startswith(PROGRESS_PREFIX):
        return None
    parts = line[len(PROGRESS_PREFIX):].split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])


def build(bundle_path: str, samples: int, threads: int = 0) -> int:
    """Build (or find cached) the atlas of ``bundle_path``; returns its size."""
    import torch

    from model.bundle import load_bundle
    from model.formats import CheckpointError
    from vjapp.engine.show import scene_atlas

    if threads > 0:
        torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    bundle = load_bundle(bundle_path, parts=("generator", "clip"))
    if bundle.clip is None:
        raise CheckpointError(f"{bundle_path}: the bundle has no CLIP model: no atlas can be built")

    def progress(done: int, total: int) -> None:
        print(f"{PROGRESS_PREFIX}{done} {total}", flush=True)

    atlas = scene_atlas(bundle, build=True, settings=AtlasSettings(samples=samples), progress=progress)
    assert atlas is not None
    return len(atlas)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PROG, description="build a bundle's latent atlas into its cache")
    p.add_argument("bundle", help="bundle directory")
    p.add_argument("--samples", type=int, default=AtlasSettings.samples, help="latents sampled into the atlas")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if args.samples < 1:
        print(f"{ERROR_PREFIX}--samples must be >= 1, got {args.samples}", flush=True)
        return 2
    try:
        n = build(args.bundle, args.samples, args.threads)
    except Exception as exc:  # noqa: BLE001 - one clear line for the app, whatever went wrong
        print(f"{ERROR_PREFIX}could not build the latent atlas of {args.bundle}: {exc}", flush=True)
        return 1
    print(f"{DONE_PREFIX}{n}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
