"""Recipe search: a space of recipes (space.py), an Optuna study over it scored on part of the
suite (study.py, request.py), and the finalists ranked on the held-out rest (heldout.py)."""
