"""mergeval's command line: the group and one module per command family."""
