"""How a model under test answers: generation settings, messages, the answer stage, the backends."""
