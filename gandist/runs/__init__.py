"""Commands over finished runs: drawing samples, scoring checkpoints."""
