"""mergeval: merge LLMs with mergekit and grade every merge on your private item suite."""

__version__ = "0.1.0"
