"""The training core: the root config, algorithms, updaters, evaluation pacing and the Trainer."""
