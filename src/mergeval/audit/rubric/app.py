"""The rubric-check app's page, in Gradio, and the server that shows it.

    mergeval rubric                        # http://127.0.0.1:7860, loopback only
    MERGEVAL_RUBRIC_PASSWORD=... mergeval rubric --host 0.0.0.0   # beyond loopback: a password

Every button calls one Desk method; what goes wrong is shown on the page (gr.Error), never
swallowed. Element ids (elem_id) are stable: the browser test finds the page by them.
"""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from mergeval.audit import calibrate as cal
from mergeval.audit.rubric.session import Desk
from mergeval.core.workspace import Workspace

ALL = "(all skills)"
LOCAL, REMOTE = "local model folder", "OpenAI-compatible endpoint"


def agreement_text(desk: Desk) -> str:
    try:
        stats = desk.agreement()
    except Exception as e:  # e.g. a hand-edited labels file with a bad line: say so, keep the app
        return f"**Running agreement:** cannot compute: {e}"
    if stats is None:
        return f"**Running agreement:** no labels yet in `{desk.labels}`."
    return (f"**Running agreement** of Proctora with the {stats['n_labels']} label(s) in `{desk.labels}`\n\n"
            f"```\n{cal.format_agreement(stats)}\n```")


def build(desk: Desk):
    import gradio as gr

    lo, hi = desk.settings.scale
    suites = desk.suites()
    suite0 = suites[0] if suites else None

    def pick(suite, skill, item_id):
        if not suite or not item_id or item_id not in desk.items.get(suite, {}):
            raise gr.Error("Choose an item first.")
        return desk.item(suite, item_id)

    def on_suite(suite):
        ids = desk.item_ids(suite, None)
        return (gr.update(choices=[ALL, *desk.skills(suite)], value=ALL),
                gr.update(choices=ids, value=ids[0] if ids else None))

    def on_skill(suite, skill):
        ids = desk.item_ids(suite, None if skill == ALL else skill)
        return gr.update(choices=ids, value=ids[0] if ids else None)

    def on_item(suite, item_id):
        if not suite or item_id not in desk.items.get(suite, {}):
            return "", "", ""
        return desk.describe(desk.item(suite, item_id)), "", ""

    def on_generate(suite, skill, item_id, source, local, endpoint, served, key_env):
        item = pick(suite, skill, item_id)
        try:
            if source == LOCAL:
                if not local:
                    raise gr.Error("Choose or type a local model folder.")
                return desk.generate_local(item, str(desk.ws.resolve(local))), Path(local).name
            if not endpoint or not served:
                raise gr.Error("Give the endpoint's base URL and the model name it serves.")
            return desk.generate_remote(item, endpoint, served, key_env or None), served
        except gr.Error:
            raise
        except Exception as e:
            raise gr.Error(f"generation failed: {type(e).__name__}: {e}")

    def on_grade(suite, skill, item_id, answer, samples):
        item = pick(suite, skill, item_id)
        if not answer.strip():
            raise gr.Error("Write or generate an answer first.")
        try:
            result = desk.grade(item, answer, int(samples))
        except Exception as e:  # judge unavailable, model folder missing: tell the user
            raise gr.Error(f"the judge cannot grade: {e}")
        return desk.describe_grade(result), "\n\n---\n\n".join(result.replies)

    def on_save(suite, skill, item_id, answer, score, who, note, model):
        item = pick(suite, skill, item_id)
        if not answer.strip():
            raise gr.Error("There is no answer to score.")
        if score is None:
            raise gr.Error(f"Choose your score ({lo} to {hi}).")
        if not who.strip():
            raise gr.Error("Say who you are (it goes into the label).")
        desk.save_label(item, answer, int(score), who, note, model)
        return f"Saved: score {score} for {item.id} → `{desk.labels}`", agreement_text(desk)

    with gr.Blocks(title="Proctora rubric check", analytics_enabled=False) as page:
        gr.Markdown("# Proctora rubric check\nGrade an answer with the judge, then record your own score.")
        if desk.problems:
            gr.Markdown("**Suites that could not be read:**\n\n" + "\n".join(f"- `{p}`" for p in desk.problems))
        with gr.Row():
            suite = gr.Dropdown(suites, value=suite0, label="Suite", elem_id="suite")
            skill = gr.Dropdown([ALL, *desk.skills(suite0)], value=ALL, label="Skill", elem_id="skill")
            ids = desk.item_ids(suite0, None) if suite0 else []
            item_id = gr.Dropdown(ids, value=ids[0] if ids else None, label="Item", elem_id="item")
        item_md = gr.Markdown(elem_id="item-text")
        answer = gr.Textbox(label="Answer", lines=4, elem_id="answer")
        model_used = gr.State("")  # the model that wrote the answer, kept in its label
        with gr.Accordion("Generate an answer with a model", open=False):
            source = gr.Radio([LOCAL, REMOTE], value=LOCAL, label="Answer with", elem_id="source")
            local = gr.Dropdown(desk.local_models(), label="Model folder (a path also works)",
                                allow_custom_value=True, elem_id="local-model")
            with gr.Row():
                endpoint = gr.Textbox(label="Endpoint base URL", placeholder="http://127.0.0.1:8000/v1",
                                      elem_id="endpoint")
                served = gr.Textbox(label="Model name on the server", elem_id="served-model")
                key_env = gr.Textbox(label="Env var holding the API key (optional)", elem_id="key-env")
            generate = gr.Button("Generate an answer", elem_id="generate")
        with gr.Row():
            samples = gr.Slider(1, 8, value=desk.settings.samples, step=1, label="Judge samples", elem_id="samples",
                                info="Above 1 at temperature 0, samples use the re-ask temperature.")
            grade = gr.Button("Grade with Proctora", variant="primary", elem_id="grade")
        grade_md = gr.Markdown(elem_id="grade-result")
        replies = gr.Textbox(label="Proctora's reasoning (raw reply)", lines=3, interactive=False,
                             elem_id="judge-reply")
        with gr.Row():
            score = gr.Radio([str(n) for n in range(lo, hi + 1)], label="Your score", elem_id="human-score")
            who = gr.Textbox(label="Your name", value=os.environ.get("USER", ""), elem_id="who")
            note = gr.Textbox(label="Note (optional)", elem_id="note")
        save = gr.Button("Save my score as a calibration label", elem_id="save-label")
        saved_md = gr.Markdown(elem_id="save-status")
        agreement_md = gr.Markdown(elem_id="agreement")

        where = [suite, skill, item_id]
        suite.change(on_suite, suite, [skill, item_id])
        skill.change(on_skill, [suite, skill], item_id)
        item_id.change(on_item, [suite, item_id], [item_md, grade_md, replies])
        answer.input(lambda: "", None, model_used)  # typed by hand: no model wrote it
        generate.click(on_generate, [*where, source, local, endpoint, served, key_env], [answer, model_used])
        grade.click(on_grade, [*where, answer, samples], [grade_md, replies])
        save.click(on_save, [*where, answer, score, who, note, model_used], [saved_md, agreement_md])
        page.load(lambda s, i: (on_item(s, i)[0], agreement_text(desk)), [suite, item_id], [item_md, agreement_md])
    return page


def serve(ws: Workspace, settings, labels: Path, *, host: str, port: int, password: str | None) -> None:
    """Serve until interrupted. The caller has checked that host is loopback or password is set."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline tool
    desk = Desk(ws, settings, labels)
    page = build(desk)
    # Any user name; the password compared in constant time.
    auth = (lambda _user, given: hmac.compare_digest(given.encode(), password.encode())) if password else None
    page.queue(default_concurrency_limit=1)  # one judge, one generator: requests take turns
    try:
        page.launch(server_name=host, server_port=port, auth=auth, share=False, ssr_mode=False,
                    mcp_server=False, footer_links=[], show_error=True, quiet=False)
    finally:
        desk.close()
