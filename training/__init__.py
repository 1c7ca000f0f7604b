"""Training and finetuning for objects365-zoo: datasets, transforms, recipes, the engine, publishing.

Entry points: ``training.finetune(...)`` (one call: your data in, a model loadable by name out) and
``python -m training`` (see :mod:`training.cli`). Depends on ``zoo``; ``zoo`` never imports this.
"""


def finetune(*args, **kwargs):
    """:func:`training.finetune.finetune` (imported on first use: ``import training`` stays light)."""
    from .finetune import finetune as run

    return run(*args, **kwargs)
