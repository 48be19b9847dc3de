"""Training, evaluation and checkpointing. Import the submodules directly (kept light on purpose)."""
