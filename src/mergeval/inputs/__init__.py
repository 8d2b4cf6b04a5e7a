"""What the user writes, read strictly: items, recipes, judge-independent checks, source models."""
