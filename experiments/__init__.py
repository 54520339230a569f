"""Config-driven experiment runner: ``python -m experiments configs/NAME.yaml [key=value ...] [--out DIR]``."""
