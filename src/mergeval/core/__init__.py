"""The ground floor: errors about input, content hashes, crash-safe files, the workspace and its lock."""
