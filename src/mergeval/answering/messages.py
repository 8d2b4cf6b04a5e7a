"""What a model under test is sent for an item: chat messages, or a plain prompt for a model
without a chat template. Every backend asks here, so they all send the same conversation."""

from __future__ import annotations

from mergeval.inputs.items import Item


def messages_for(item: Item) -> list[dict]:
    messages = [{"role": "system", "content": item.system}] if item.system else []
    messages += [{"role": role, "content": text} for role, text in item.turns]
    messages.append({"role": "user", "content": item.question})
    return messages


def plain_prompt(item: Item) -> str:
    parts = [item.system] if item.system else []
    parts += [f"{role.capitalize()}: {text}" for role, text in item.turns]
    parts += [f"User: {item.question}", "Assistant:"]
    return "\n\n".join(parts)


def todo_batches(items: list[Item], todo: set[str], size: int):
    wanted = [it for it in items if it.id in todo]
    for i in range(0, len(wanted), size):
        yield wanted[i : i + size]
