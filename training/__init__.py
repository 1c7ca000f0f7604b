"""Training and finetuning for objects365-zoo: datasets, transforms, recipes, the engine, publishing.

Entry point: ``python -m training`` (see :mod:`training.cli`). Depends on ``zoo``; ``zoo`` never imports this.
"""
