"""Settings of the bound laboratory (one frozen dataclass; every field is a flag of
``experiments/bounds_report.py``, which documents them)."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class LabConfig:
    """Hyper-parameters of the LeNet-300-100 bound experiments (defaults: the full run)."""

    seed: int = 0
    devices: int = 1                      # devices for jaxprune.train.fit
    dataset: str = "mnist"
    limit_train: int | None = None        # first N training images (part of the cache key)
    cache_dir: str | None = None          # save / restore the trained cases here
    # training cases (bounds paper §4.2, App. B.1)
    epochs: int = 15
    lr: float = 0.1
    momentum: float = 0.5
    batch_size: int = 100
    schedule: str = "cosine"
    l1: float = 1e-4                      # moderate case: l1·Σ|kernel| added to the mean CE
    dropout: tuple[float, ...] = ()
    min_accuracy: float = 0.98
    easy_weight_sparsity: float = 0.95
    easy_neuron_sparsity: float = 0.90
    retrain_epochs: int = 10
    l0_epochs: int = 3
    l0_lambda: float = 5e-2
    l0_lr: float = 1e-3
    l0_gate_lr: float = 2e-2
    l0_init_drop: float = 0.1
    # bounds
    guarantee: float = 0.5
    fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)
    delta: float = 0.5
    K: float = 2.0
    K_prime: float = 3.0
    sipp_val_points: int | None = None    # default ⌈K' log(2ρ/δ)⌉ (Theorem A.1)
    mussay_c: float = 1.0
    coreset_c: float = 1.0
    beta: float | None = None             # default max ‖(x, 1)‖ over the training inputs
    projection_dim: int = 10
    mu_random: int = 512
    mu_ascent_steps: int = 100
    sparsities: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9, 0.95)
    max_draws: int = 200_000
    # fine-tuning gap, KD, hidden vs output
    ft_sparsities: tuple[float, ...] = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)
    ft_epochs: int = 5
    ft_lr: float = 1e-3
    kd_epochs: int = 5
    kd_lr: float = 1e-3
    hidden_neuron_sparsity: float = 0.90
    hidden_weight_sparsity: float = 0.95
    # α-scaling
    alphas: tuple[float, ...] = (0.01, 0.1, 0.5, 1.0, 2.0, 10.0, 100.0)

    @classmethod
    def from_namespace(cls, ns) -> "LabConfig":
        """The fields of ``ns`` (e.g. an ``argparse.Namespace``) that are settings here."""
        kw = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in kw.items()})
