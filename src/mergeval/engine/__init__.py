"""The sweep without Prefect: plan, build, answer, grade, regrade, as plain functions."""
