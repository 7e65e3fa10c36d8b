"""Where the picture starts: base latents from seeds and text prompts, crossfades, style mixing.

All of this runs on the engine thread, which owns the models. A text prompt is resolved by
sampling ``candidates`` latents, rendering each and keeping the one whose image is nearest to
the prompt in CLIP space (ECCV 2022, section 4.5). That costs one synthesis and one CLIP image
encoding per candidate, too much to do between two frames, so :class:`PromptSearch` does it a
few candidates at a time (``advance``) while the show goes on, and the result is cached per
prompt.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

log = logging.getLogger(__name__)

# W+ latent of one picture: [num_ws, w_dim]
Latent = torch.Tensor


def seed_to_z(seed: int, z_dim: int) -> torch.Tensor:
    """The z for a seed, identical on every machine and device: ``[1, z_dim]`` float32 on CPU."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(1, z_dim, generator=g)


def prompt_seed(prompt: str) -> int:
    """A stable seed derived from the prompt text (so a prompt always finds the same latent)."""
    return int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:4], "little") & 0x7FFFFFFF


class LatentBank:
    """Raw (untruncated) W+ latents for seeds, computed with the generator's mapping and cached.

    Truncation is applied later, per frame, so the truncation control can move live.
    """

    def __init__(self, mapping: Callable[[torch.Tensor], torch.Tensor], z_dim: int, device: torch.device,
                 capacity: int = 64) -> None:
        self._mapping = mapping
        self._z_dim = z_dim
        self._device = device
        self._cache: OrderedDict[int, Latent] = OrderedDict()
        self._capacity = capacity

    @torch.no_grad()
    def for_seed(self, seed: int) -> Latent:
        seed = int(seed)
        hit = self._cache.get(seed)
        if hit is not None:
            self._cache.move_to_end(seed)
            return hit
        z = seed_to_z(seed, self._z_dim).to(self._device)
        ws = self._mapping(z)[0]  # [num_ws, w_dim]
        self._cache[seed] = ws
        if len(self._cache) > self._capacity:
            self._cache.popitem(last=False)
        return ws


@dataclass
class SearchResult:
    prompt: str
    latent: Latent  # raw W+ [num_ws, w_dim]
    score: float  # cosine similarity of its image to the prompt in CLIP space
    candidates: int


class PromptSearch:
    """Nearest-of-K search for a prompt's starting latent, done in small steps and cached.

    Args:
        mapping: z [N, z_dim] -> raw ws [N, num_ws, w_dim].
        render: ws [N, num_ws, w_dim] -> images [N, 3, H, W] in [-1, 1] (truncated ws go in).
        encode_image: images -> L2-normalized CLIP embeddings [N, D].
        encode_text: list of str -> L2-normalized CLIP embeddings [N, D].
        truncate: raw ws -> truncated ws, for rendering the candidates as they will be seen.
        candidates: K latents tried per prompt.
        batch: candidates rendered per :meth:`advance` call.
    """

    def __init__(
        self,
        mapping: Callable[[torch.Tensor], torch.Tensor],
        render: Callable[[torch.Tensor], torch.Tensor],
        encode_image: Callable[[torch.Tensor], torch.Tensor],
        encode_text: Callable[[Sequence[str]], torch.Tensor],
        truncate: Callable[[torch.Tensor], torch.Tensor],
        z_dim: int,
        device: torch.device,
        candidates: int = 32,
        batch: int = 2,
        cache_size: int = 32,
    ) -> None:
        if candidates < 1 or batch < 1:
            raise ValueError("candidates and batch must be >= 1")
        self._mapping, self._render = mapping, render
        self._encode_image, self._encode_text = encode_image, encode_text
        self._truncate = truncate
        self._z_dim, self._device = z_dim, device
        self.candidates, self.batch = candidates, batch
        self._cache: OrderedDict[str, SearchResult] = OrderedDict()
        self._cache_size = cache_size
        # the search in progress
        self._prompt: str | None = None
        self._text: torch.Tensor | None = None
        self._done = 0
        self._best: SearchResult | None = None
        # with a latent atlas (set_atlas) a prompt resolves at once to the atlas blend for its text
        self._atlas: Any = None  # model.atlas.AtlasSteering
        self._num_ws = 0

    def set_atlas(self, steering: Any, num_ws: int) -> None:
        """Resolve prompts through ``steering`` (an :class:`model.atlas.AtlasSteering`) from now on:
        no candidates are rendered; cached results of the old search are dropped."""
        self._atlas, self._num_ws = steering, int(num_ws)
        self._cache.clear()
        self._prompt, self._text, self._best = None, None, None

    @property
    def uses_atlas(self) -> bool:
        return self._atlas is not None

    @torch.no_grad()
    def _from_atlas(self, prompt: str) -> SearchResult:
        text = self._encode_text([prompt]).to(self._device).float()  # [1, D]
        w = self._atlas.target(text)[0].to(self._device)  # [w_dim]
        score = float(self._atlas.nearest_similarity(text)[0])
        result = SearchResult(prompt, w[None].expand(self._num_ws, -1).clone(), score, len(self._atlas.atlas))
        self._cache[prompt] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        log.info("prompt %r: atlas blend (nearest of %d entries at CLIP similarity %.3f)", prompt,
                 result.candidates, score)
        return result

    @property
    def pending(self) -> str | None:
        """The prompt being searched, if any."""
        return self._prompt

    def cached(self, prompt: str) -> SearchResult | None:
        hit = self._cache.get(prompt)
        if hit is not None:
            self._cache.move_to_end(prompt)
        return hit

    def request(self, prompt: str) -> SearchResult | None:
        """Start searching ``prompt`` (dropping any other search); returns the result if cached
        (with an atlas: always, resolved now)."""
        hit = self.cached(prompt)
        if hit is not None or prompt == self._prompt:
            return hit
        if self._atlas is not None:
            return self._from_atlas(prompt)
        self._prompt = prompt
        self._text = None
        self._done = 0
        self._best = None
        return None

    @torch.no_grad()
    def advance(self) -> SearchResult | None:
        """Try the next ``batch`` candidates; returns the result when the search completes."""
        prompt = self._prompt
        if prompt is None:
            return None
        if self._text is None:
            self._text = self._encode_text([prompt]).to(self._device)  # [1, D]
        n = min(self.batch, self.candidates - self._done)
        base_seed = prompt_seed(prompt)
        z = torch.cat([seed_to_z(base_seed + self._done + i, self._z_dim) for i in range(n)]).to(self._device)
        raw = self._mapping(z)  # [n, num_ws, w_dim]
        images = self._render(self._truncate(raw))
        scores = (self._encode_image(images) @ self._text.T).squeeze(1)  # [n]
        i = int(torch.argmax(scores))
        score = float(scores[i])
        if self._best is None or score > self._best.score:
            self._best = SearchResult(prompt, raw[i].clone(), score, 0)
        self._done += n
        if self._done < self.candidates:
            return None
        result = SearchResult(prompt, self._best.latent, self._best.score, self._done)
        self._cache[prompt] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        self._prompt, self._text, self._best = None, None, None
        log.info("prompt %r: best of %d candidates, CLIP similarity %.3f", prompt, result.candidates, result.score)
        return result

    def resolve(self, prompt: str) -> SearchResult:
        """Search to the end now (offline render)."""
        hit = self.request(prompt)
        while hit is None:
            hit = self.advance()
        return hit


class Crossfade:
    """A latent that glides to each new target over ``seconds`` (smoothstep), never jumping."""

    def __init__(self, initial: Latent, seconds: float = 1.5) -> None:
        self._from = initial.clone()
        self._to = initial.clone()
        self._t0 = 0.0
        self.seconds = float(seconds)
        self._fade = self.seconds  # length of the glide under way
        self._out = initial.clone()

    @property
    def target(self) -> Latent:
        return self._to

    def set_target(self, latent: Latent, now: float, immediate: bool = False, seconds: float | None = None) -> None:
        """Glide to ``latent`` from wherever the fade is at ``now`` (or jump there at once), over
        ``seconds`` (default: the fade's own length)."""
        if torch.equal(latent, self._to) and not immediate:
            return
        self._from.copy_(latent if immediate else self.value(now))
        self._to = latent.clone()
        self._t0 = now
        self._fade = self.seconds if seconds is None else float(seconds)

    def value(self, now: float) -> Latent:
        fade = self._fade
        if fade <= 0:
            return self._to
        s = min(max((now - self._t0) / fade, 0.0), 1.0)
        s = s * s * (3.0 - 2.0 * s)
        return torch.lerp(self._from, self._to, s, out=self._out)


def group_masks(groups: Sequence[tuple[int, int]], num_ws: int, device: torch.device) -> torch.Tensor:
    """One-hot layer-group masks ``[len(groups), num_ws, 1]`` for per-group gains and mixing."""
    masks = torch.zeros(len(groups), num_ws, 1, device=device)
    for i, (start, stop) in enumerate(groups):
        masks[i, start:stop] = 1.0
    return masks


def truncate(ws: torch.Tensor, w_avg: torch.Tensor, psi: float) -> torch.Tensor:
    """Truncation toward the mean latent: ``w_avg + psi * (ws - w_avg)``."""
    if psi == 1.0:
        return ws
    return torch.lerp(w_avg, ws, psi)


def db_to_unit(db: float, quiet_db: float, loud_db: float) -> float:
    """Map a loudness in dB to [0, 1]: quiet_db and below -> 0, loud_db and above -> 1."""
    if not math.isfinite(db):
        return 0.0
    return min(max((db - quiet_db) / (loud_db - quiet_db), 0.0), 1.0)
