"""OpenCLIP and torchvision import next to the pinned CPU torch, in a clean interpreter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_open_clip_imports_and_builds_a_model():
    r = _run(
        "from model.openclip_compat import import_open_clip\n"
        "import torch\n"
        "oc = import_open_clip()\n"
        "import torchvision\n"
        "assert torch.__version__.startswith('2.13.0'), torch.__version__\n"
        "tok = oc.get_tokenizer('RN50')\n"
        "print('tokens', tuple(tok(['a storm']).shape))\n"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "tokens (1, 77)" in r.stdout


def test_import_is_idempotent():
    r = _run(
        "from model.openclip_compat import import_open_clip, import_torchvision\n"
        "a = import_open_clip(); b = import_open_clip(); tv = import_torchvision()\n"
        "assert a is b\n"
        "print('ok')\n"
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("ok")
