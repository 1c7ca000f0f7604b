"""Training and finetuning for objects365-zoo: datasets, transforms, recipes, the engine, publishing.

Entry points: ``training.finetune(...)`` (one call: your data in, a model loadable by name out) and
``python -m training`` (see :mod:`training.cli`). Depends on ``zoo``; ``zoo`` never imports this.
"""


def finetune(*args, **kwargs):
    """:func:`training.finetuning.finetune`, imported on first use (``import training`` stays light). Its module is
    not called ``finetune``: importing it would replace this function on the package."""
    from .finetuning import finetune as run

    return run(*args, **kwargs)
