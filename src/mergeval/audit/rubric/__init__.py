"""The rubric-check app (`mergeval rubric`): Proctora on one answer at a time, your own scores
recorded as calibration labels. session.py is the logic, app.py the Gradio page and server."""

from mergeval.audit.rubric.app import build, serve
from mergeval.audit.rubric.session import Desk

__all__ = ["Desk", "build", "serve"]
