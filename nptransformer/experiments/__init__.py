"""Measured experiments, each a function that returns plain dicts and reproduces a table or a
figure of docs/experiments.md (``python -m nptransformer.experiments NAME``):

- ``perplexity_table``: n-gram, neural n-gram and GPT perplexities on the grammar (against its
  exact entropy) and on the standard library's docstrings (perplexity.py);
- ``transfer_learning_curves``: GPT and BERT pre-trained, then fine-tuned frozen, fully and from
  scratch on 50 / 200 / 1000 labelled reviews (transfer.py);
- ``ner_experiment``: named entities with BERT (ner.py);
- ``few_shot_curve``: k-shot prompting of a pre-trained GPT (few_shot.py).

All of them train with ``fit`` (loop.py), the Trainer's step without a run directory.
"""
from .few_shot import few_shot_curve, few_shot_markdown, plot_few_shot_curve
from .loop import fit, step_rng
from .ner import ner_experiment, ner_markdown
from .perplexity import perplexity_markdown, perplexity_table, plot_perplexities
from .transfer import plot_transfer_curves, transfer_learning_curves, transfer_markdown

EXPERIMENTS = {"perplexity": perplexity_table, "transfer": transfer_learning_curves, "ner": ner_experiment,
               "few-shot": few_shot_curve}
PLOTS = {"perplexity": plot_perplexities, "transfer": plot_transfer_curves, "few-shot": plot_few_shot_curve}
TABLES = {"perplexity": perplexity_markdown, "transfer": transfer_markdown, "ner": ner_markdown,
          "few-shot": few_shot_markdown}
QUICK_SETTINGS = {
    "perplexity": {
        "corpora": ("grammar",),
        "grammar": {"train_sentences": 300, "test_sentences": 50, "orders": (1, 2),
                    "neural": {"n": 3, "embed_dim": 8, "hidden": 16, "steps": 30, "batch_size": 32, "warmup": 3},
                    "gpt": {"d_model": 16, "n_layers": 1, "n_heads": 2, "steps": 10, "batch_size": 8, "warmup": 2}},
    },
    "transfer": {"sizes": (8, 16), "seeds": (0,), "test_examples": 40, "pretrain_examples": 100,
                 "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "dim_feedforward": 32},
                 "pretrain": {"steps": 5, "batch_size": 8, "warmup": 1},
                 "finetune": {"steps": 4, "batch_size": 8, "warmup": 1}},
    "ner": {"sizes": (8,), "test_examples": 40, "pretrain_examples": 100,
            "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "dim_feedforward": 32},
            "pretrain": {"steps": 5, "batch_size": 8, "warmup": 1},
            "finetune": {"steps": 4, "batch_size": 8, "warmup": 1}},
    "few-shot": {"ks": (0, 1, 2), "prompts": 40, "pretrain_documents": 50, "examples_per_document": 3,
                 "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "dim_feedforward": 32, "max_len": 48},
                 "pretrain": {"steps": 5, "batch_size": 8, "warmup": 1}},
}
"""Tiny settings (``--quick`` and the tests): every code path runs in seconds; the numbers mean nothing."""

__all__ = ["EXPERIMENTS", "PLOTS", "QUICK_SETTINGS", "TABLES", "few_shot_curve", "few_shot_markdown", "fit",
           "ner_experiment", "ner_markdown", "perplexity_markdown", "perplexity_table", "plot_few_shot_curve",
           "plot_perplexities", "plot_transfer_curves", "step_rng", "transfer_learning_curves", "transfer_markdown"]
