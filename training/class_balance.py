"""A classifier in the loop that keeps an unconditional generator from dropping classes.

An unconditional GAN trained on a few hundred thousand images (what a CPU can show it) keeps the
easy modes and drops the hard ones: our default generator never drew a waterfall. Rangwani et al.
("Class Balancing GAN with a Classifier in the Loop", NeurIPS 2021) add a term to the generator's
loss that uses a frozen classifier: it pushes the generator toward the classes it draws least.

The classifier is the bundle's CLIP, zero-shot (or, with ``judges``, small CNNs trained on real
frames: see below), with the label prompts every other stage uses
(:func:`training.stages.class_text_embeddings`), at CLIP's own learned temperature. For a batch of
fakes with class probabilities ``p_i`` (rows of ``softmax(scale · image @ text.T)``):

* the *running marginal* ``m`` is an exponential moving average of the batch means ``mean_i p_i``
  (momentum ``0.99``: a few hundred batches, so a batch of 8 does not decide what "rare" is);
* the balance term ``Σ_k mean_i p_ik · log(K · max(m_k, floor))`` (``m`` held constant) is the
  first-order change of ``KL(m ‖ uniform)`` when the batch moves: it lowers the probability of
  classes drawn more than ``1/K`` of the time and raises that of the ones drawn less;
* the confidence term ``mean_i H(p_i)`` makes each sample commit to one scene, so the generator
  cannot satisfy the balance with images that look like all classes at once;
* optionally (``pull`` > 0) a *nearest-sample pull*: for each class that is the nearest class of
  fewer than ``1/K`` of the fakes, the fake of the batch already nearest to it gets ``−log p_ik``,
  weighted by the class's deficit ``K · max(0, 1/K − n_k)``. ``n`` is a second running marginal
  that counts each fake for its top-1 class, as the coverage measure does: the soft marginal ``m``
  can give a class 9% of the probability mass while it is the top-1 of 1% of the fakes. The
  balance term's gradient vanishes for a class no fake comes near (``∂p_k/∂logit_k = p_k(1 − p_k)
  ≈ 0``): the default generator drew waterfalls 1.6% of the time after 2575 balanced steps, and a
  doubled weight did not help. ``−log p`` does not vanish, and pulling the nearest fake (not an
  arbitrary one) asks the least of the picture.

The discriminator still decides what is realistic; this term only decides *which* real-looking
scene. The generator stage evaluates coverage with the same CLIP, so a rise there is partly by
construction: the eval's contact sheets are where a person checks that the new scenes are real.

CLIP's idea of a class is not a person's: the default generator drew "waterfalls" 9.8% of the time
by CLIP and none by a classifier trained on real frames. ``--class-balance-judge DIR`` therefore
lets classifiers trained on real frames (:mod:`training.judge`, both forms, trained on their own data
with their own seed: ``--class-balance-judge-data``/``--class-balance-judge-seed``) drive the term.
They are a training signal: `vjapp-train eval`'s independent judge is a separate model (other data,
other seeds), and the stage refuses the eval's seeds.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.distributed as dist
from torch import nn


class ClassBalance:
    """The class-balance term of the generator loss; holds the frozen CLIP and the running marginal."""

    def __init__(
        self,
        clip: nn.Module | None,
        labels: Sequence[str],
        momentum: float = 0.99,
        floor: float = 1e-3,
        templates: Sequence[str] | None = None,
        pull: float = 0.0,
        judges: Sequence[nn.Module] | None = None,
    ) -> None:
        """``judges`` instead of ``clip``: classifiers trained on real frames (:class:`training.judge.Judge`,
        e.g. the full and the structure form) whose summed logits classify the fakes; they must be a
        *training signal* of their own (own data and seed), never the eval's independent judge."""
        from training.stages import DEFAULT_TEMPLATES, class_text_embeddings

        labels = [str(label) for label in labels]
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"class balance needs at least two distinct labels, got {labels!r}")
        if not (isinstance(momentum, (int, float)) and 0 <= momentum < 1):
            raise ValueError(f"class balance momentum must be in [0, 1), got {momentum!r}")
        if not (isinstance(floor, (int, float)) and 0 < floor < 1 / len(labels)):
            raise ValueError(f"class balance floor must be in (0, 1/{len(labels)}), got {floor!r}")
        if not (isinstance(pull, (int, float)) and math.isfinite(pull) and pull >= 0):
            raise ValueError(f"class balance pull must be a finite number >= 0, got {pull!r}")
        self.pull = float(pull)
        self.labels = tuple(labels)
        self.momentum = float(momentum)
        self.floor = float(floor)
        self.judges = tuple(j.eval().requires_grad_(False) for j in (judges or ()))
        self.clip = None if clip is None else clip.eval().requires_grad_(False)
        if self.judges:
            for j in self.judges:
                if tuple(getattr(j, "config").labels) != self.labels:
                    raise ValueError(f"class balance: a classifier's labels {list(j.config.labels)!r} are not "
                                     f"the labels {list(self.labels)!r}")
            device = next(self.judges[0].parameters()).device
        elif self.clip is not None:
            device = next(self.clip.parameters()).device
            with torch.no_grad():
                self.text = class_text_embeddings(self.clip, labels, tuple(templates or DEFAULT_TEMPLATES)).float()  # [K, D]
                self.scale = float(self.clip.logit_scale.exp().clamp(max=100.0))
        else:
            raise ValueError("class balance needs a CLIP or classifiers trained on real frames")
        k = len(labels)
        self.marginal = torch.full([k], 1.0 / k, device=device)  # running class frequencies of the fakes
        self.nearest_marginal = self.marginal.clone()  # running top-1 class frequencies (the pull's deficit)

    def log_probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class log-probabilities ``[N, K]`` of images ``[N, 3, H, W]`` in [-1, 1] (differentiable)."""
        if self.judges:  # a product of the classifiers' answers: the fake must look like the class in each
            return torch.log_softmax(sum(j(images.float()) for j in self.judges), dim=1)
        assert self.clip is not None
        features = self.clip.encode_image(images.float())  # [N, D], unit length
        return torch.log_softmax(self.scale * features @ self.text.T, dim=1)

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[N, K]`` of images ``[N, 3, H, W]`` in [-1, 1] (differentiable)."""
        return self.log_probabilities(images).exp()

    def deficit(self) -> torch.Tensor:
        """``K · max(0, 1/K − n_k)`` per class ``[K]`` from the top-1 frequencies: 0 for classes drawn often
        enough, 1 for one never drawn."""
        k = len(self.labels)
        return (1.0 / k - self.nearest_marginal).clamp(min=0) * k

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """The term for a batch of fakes (to add to G's loss) and what it measured; updates the marginal."""
        logp = self.log_probabilities(images)  # [N, K]
        p = logp.exp()
        batch = p.mean(dim=0)  # [K]
        k = len(self.labels)
        seen = torch.cat([batch.detach(), torch.nn.functional.one_hot(p.detach().argmax(dim=1), k).float().mean(0)])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(seen)
            seen /= dist.get_world_size()
        self.marginal.mul_(self.momentum).add_(seen[:k], alpha=1 - self.momentum)
        self.nearest_marginal.mul_(self.momentum).add_(seen[k:], alpha=1 - self.momentum)
        weight = torch.log(self.marginal.clamp(min=self.floor) * k)  # [K]: > 0 too often, < 0 too rarely
        balance = (batch * weight).sum()
        entropy = -(p * logp).sum(dim=1).mean()
        stats = {
            "balance/term": float(balance.detach()),
            "balance/entropy": float(entropy.detach()),
            "balance/kl_uniform": self.kl_uniform(),
            "balance/min_class": float(self.marginal.min()),
        }
        total = balance + entropy
        if self.pull > 0:
            deficit = self.deficit()  # [K], from the marginal just updated: 0 for a class drawn enough
            nearest = logp.max(dim=0).values  # [K]: the log-probability of the fake nearest each class
            pull = -(deficit * nearest).sum()
            total = total + self.pull * pull
            stats["balance/pull"] = float(pull.detach())
        return total, stats

    def kl_uniform(self) -> float:
        """``KL(m ‖ uniform)`` of the running marginal: 0 when every class is drawn equally often."""
        m = self.marginal.clamp(min=1e-12)
        return float((m * torch.log(m * len(self.labels))).sum())

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"labels": list(self.labels), "marginal": [float(v) for v in self.marginal],
                "nearest_marginal": [float(v) for v in self.nearest_marginal]}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore the running marginal (kept as is when the checkpoint was for other labels)."""
        if list(state.get("labels", [])) != list(self.labels):
            return
        for name in ("marginal", "nearest_marginal"):  # (older checkpoints have no nearest_marginal)
            values = [float(v) for v in state.get(name, [])]
            if len(values) == len(self.labels) and all(math.isfinite(v) and v >= 0 for v in values):
                current = getattr(self, name)
                setattr(self, name, torch.tensor(values, dtype=current.dtype, device=current.device))
