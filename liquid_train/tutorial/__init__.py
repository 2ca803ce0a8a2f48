"""Toy inputs for ``docs/tutorial.md`` (bring your own base model and data): the tutorial's commands run on them
in minutes on a CPU, and ``tests/test_tutorial_e2e.py`` runs the tutorial itself on them."""
