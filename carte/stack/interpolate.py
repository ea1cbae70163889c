"""Compose's variable interpolation: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
`${VAR:?error}`, `${VAR?error}`, `${VAR:+other}`, `${VAR+other}` and `$$` for a literal `$`.

A variable that is unset and has no default becomes "" (Compose does the same and warns; the
caller gets the names in `missing`). `${VAR?error}` of an unset variable raises
`InterpolationError` with the message; an unclosed `${` raises too.
"""

import re

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    """A `${VAR?message}` whose variable is unset, or a malformed `${...}`."""


def interpolate(text: str, env: dict[str, str], missing: set[str] | None = None) -> str:
    """`text` with every variable replaced from `env`."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            end = _closing_brace(text, i + 2)
            out.append(_braced(text[i + 2 : end], env, missing))
            i = end + 1
        else:
            match = _NAME.match(text, i + 1)
            if match is None:
                out.append("$")
                i += 1
                continue
            out.append(_lookup(match.group(), env, missing))
            i = match.end()
    return "".join(out)


def _closing_brace(text: str, start: int) -> int:
    depth = 1
    i = start
    while i < len(text):
        if text.startswith("${", i):
            depth += 1
            i += 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise InterpolationError(f'"{text}" has an unclosed "${{"; close it with "}}" or write "$$"')


def _braced(body: str, env: dict[str, str], missing: set[str] | None) -> str:
    match = _NAME.match(body)
    if match is None:
        raise InterpolationError(f'"${{{body}}}" is not a variable; write ${{NAME}} or "$$"')
    name, rest = match.group(), body[match.end() :]
    if not rest:
        return _lookup(name, env, missing)
    for operator in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(operator):
            argument = rest[len(operator) :]
            break
    else:
        raise InterpolationError(
            f'"${{{body}}}" has an unknown operator; use :-, -, :?, ?, :+ or +'
        )
    value = env.get(name)
    unset_or_empty = not value if operator.startswith(":") else value is None
    kind = operator[-1]
    if kind == "-":
        return interpolate(argument, env, missing) if unset_or_empty else str(value)
    if kind == "?":
        if unset_or_empty:
            message = interpolate(argument, env, missing) or "is not set"
            raise InterpolationError(f"required variable {name}: {message}")
        return str(value)
    return "" if unset_or_empty else interpolate(argument, env, missing)


def _lookup(name: str, env: dict[str, str], missing: set[str] | None) -> str:
    if name in env:
        return env[name]
    if missing is not None:
        missing.add(name)
    return ""


def parse_dotenv(text: str) -> dict[str, str]:
    """A `.env` file as Compose reads it: KEY=VALUE lines, `#` comments, optional `export `,
    single quotes literal, double quotes with \\n escapes; later values may use earlier ones."""
    env: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        line = line.removeprefix("export ").lstrip()
        key, sep, value = line.partition("=")
        key = key.strip()
        if not sep or not _NAME.fullmatch(key):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            env[key] = value[1:-1]
            continue
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace("\\n", "\n").replace('\\"', '"')
        else:
            value = value.split(" #", 1)[0].rstrip()
        env[key] = interpolate(value, env)
    return env
