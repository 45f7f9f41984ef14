"""One way to turn a pydantic `ValidationError` into the message a person reads.

The edge config, the training config, the CDK context and the API all validate with pydantic;
each used to word its errors differently. `explain` gives one line per field:
`where: what is wrong (got <value>)`.
"""

from __future__ import annotations

from pydantic import ValidationError

_MAX_INPUT = 60


def field_errors(exc: ValidationError, *, with_input: bool = True) -> list[str]:
    """One `where: what (got value)` string per error, in pydantic's order.

    Args:
        exc: the error pydantic raised.
        with_input: quote the offending value (shortened); off where it may be a secret or a
            whole request body.
    """
    lines = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(part) for part in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if with_input and "input" in err and err["type"] != "missing":
            shown = repr(err["input"])
            if len(shown) > _MAX_INPUT:
                shown = shown[: _MAX_INPUT - 3] + "..."
            msg = f"{msg} (got {shown})"
        lines.append(f"{where}: {msg}")
    return lines


def explain(exc: ValidationError, *, heading: str, with_input: bool = True) -> str:
    """`heading:` followed by one indented line per field error.

    Example: `explain(exc, heading="edge.yaml is invalid")` ->
    "edge.yaml is invalid:\\n  model.alias: String should match pattern ... (got '!')".
    """
    lines = field_errors(exc, with_input=with_input)
    return f"{heading}:\n  " + "\n  ".join(lines)
