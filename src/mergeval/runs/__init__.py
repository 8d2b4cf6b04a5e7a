"""Reading many run folders: find a run, leaderboards across runs."""
