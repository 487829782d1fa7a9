"""The one reviser prompt template and the reviser's target text.

The reviser must name its decision before the revision, so the decision can be
parsed even when the generation is cut off at the length limit.
"""

from __future__ import annotations

from pipeline_lib.revision.decisions import check_decision

Prompt = str | list[dict]

_SPEAKERS = {"system": "System", "user": "User", "assistant": "Assistant"}

_INSTRUCTIONS = """Review the assistant's response to the conversation below.
Decide how much it must change, then write the final response.

Decisions:
- none: the response is already good; repeat it unchanged.
- minor: the response is close; fix its small problems.
- major: the response is poor; rewrite it.

Answer with the decision first, in exactly this format:
Decision: <none, minor or major>
Revision:
<the final response>"""


def render_dialogue(messages: list[dict]) -> str:
    """A dialogue as "User: ...\\n\\nAssistant: ..." text; it must end with a user turn."""
    if not messages:
        raise ValueError("the dialogue has no turns")
    if messages[-1].get("role") != "user":
        raise ValueError("the dialogue must end with a user turn")
    parts = []
    for message in messages:
        role = message.get("role")
        if role not in _SPEAKERS:
            raise ValueError(f"unknown dialogue role {role!r}")
        parts.append(f"{_SPEAKERS[role]}: {message['content']}")
    return "\n\n".join(parts)


def reviser_messages(prompt: Prompt, response: str) -> list[dict]:
    """The reviser's input as chat messages: one user message holding the prompt and the response."""
    if isinstance(prompt, str):
        context = f"### Instruction\n{prompt}"
    else:
        context = f"### Conversation\n{render_dialogue(prompt)}"
    content = f"{_INSTRUCTIONS}\n\n{context}\n\n### Response to review\n{response}"
    return [{"role": "user", "content": content}]


def reviser_target(decision: str, revision: str) -> str:
    """The reviser's output text: "Decision: <decision>\\nRevision:\\n<revision>"."""
    check_decision(decision)
    if not revision.strip():
        # An empty revision would teach the reviser an output its parser rejects.
        raise ValueError("the revision text is empty")
    return f"Decision: {decision}\nRevision:\n{revision}"
