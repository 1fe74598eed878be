"""The LeNet-300-100 experiments of "When are neural pruning approximation bounds useful?"
on real MNIST, driven by ``experiments/bounds_report.py`` beside it (this package imports as
``experiments.bounds_lab``). The bound formulas, μ(P), certificates and epsilon-first ratios it
uses are :mod:`jaxprune.bounds`.

==============  =============================================================================
``config``      :class:`LabConfig`, every setting of the experiments
``network``     the eval-mode forward pass with every intermediate, final layers as
                ``(101, 10)`` matrices, masks
``cases``       the training cases (difficult, moderate, easy_weight, easy_neuron, dropout)
``samplers``    SiPP (Thm A.1/A.2), Mussay (Thm A.4) and coreset (Thm 2.6) pruning of the
                final layer, epsilon-first and sparsity-first
``tuning``      masked CE fine-tuning and logit-matching distillation
``analysis``    the sections of the report: guarantees, fine-tuning gap, hidden vs output
                error, α-scaling
``report``      markdown tables and the JSON encoding; ``figures``: the four plots
==============  =============================================================================
"""
from experiments.bounds_lab._util import log, progress
from experiments.bounds_lab.analysis import (Net, alpha_scaling, analyse, error_summary,
                                             finetune_gap, hidden_vs_output, metrics_of, prepare)
from experiments.bounds_lab.cases import Case, cached, sgd_config, train_cases
from experiments.bounds_lab.config import LabConfig
from experiments.bounds_lab.figures import (plot_alpha, plot_finetune, plot_guarantee,
                                            plot_sparsity_first)
from experiments.bounds_lab.network import (apply_mask, forward, forward_np, gated_apply, head_aug,
                                            heads_logits, magnitude_mask, max_augmented_norm,
                                            neuron_mask, ones_like, raw_pixel_layer, row_top_k,
                                            with_head)
from experiments.bounds_lab.report import (PAPER_CARD, PAPER_HIDDEN, alpha_table, cases_table,
                                           finetune_table, fmt_count, fmt_eps, fmt_pm, hidden_table,
                                           jsonable, report_card_table, sparsity_first_table,
                                           unjson, write_report)
from experiments.bounds_lab.samplers import (KIND, MAX_DRAW, METHOD_LABEL, METHODS, WEIGHT_METHODS,
                                             NeuronScores, SippParts, layer_size,
                                             neuron_epsilon_first, neuron_scores,
                                             neuron_sparsity_first, sipp_epsilon_first, sipp_parts,
                                             sipp_sparsity_first, sparsity_of)
from experiments.bounds_lab.tuning import adam_cosine, distill_logits, finetune

__all__ = [
    "LabConfig", "log", "progress",
    "forward", "forward_np", "max_augmented_norm", "heads_logits", "head_aug", "with_head",
    "ones_like", "apply_mask", "magnitude_mask", "neuron_mask", "gated_apply",
    "raw_pixel_layer", "row_top_k",
    "Case", "sgd_config", "cached", "train_cases",
    "METHODS", "METHOD_LABEL", "KIND", "WEIGHT_METHODS", "MAX_DRAW", "SippParts", "sipp_parts",
    "sipp_epsilon_first", "sipp_sparsity_first", "NeuronScores", "neuron_scores",
    "neuron_epsilon_first", "neuron_sparsity_first", "layer_size", "sparsity_of",
    "adam_cosine", "distill_logits", "finetune",
    "Net", "prepare", "error_summary", "metrics_of", "analyse", "finetune_gap",
    "hidden_vs_output", "alpha_scaling",
    "PAPER_CARD", "PAPER_HIDDEN", "jsonable", "unjson", "fmt_count", "fmt_pm", "fmt_eps",
    "cases_table", "report_card_table", "sparsity_first_table", "finetune_table",
    "hidden_table", "alpha_table", "write_report",
    "plot_guarantee", "plot_sparsity_first", "plot_finetune", "plot_alpha",
]
