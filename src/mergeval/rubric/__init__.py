"""The rubric-check app (`mergeval rubric`): Proctora on one answer at a time, your own scores
recorded as calibration labels. desk.py is the logic, page.py the Gradio page and server."""

from .desk import Desk
from .page import build, serve

__all__ = ["Desk", "build", "serve"]
