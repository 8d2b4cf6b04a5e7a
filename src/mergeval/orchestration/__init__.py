"""Everything that imports Prefect: deployments, the early server, UI artifacts, sealed results."""
