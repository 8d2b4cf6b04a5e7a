"""Writing one run folder: ranking, statistics, report.md, report.html, model cards."""
