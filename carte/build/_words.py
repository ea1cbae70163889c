"""Dockerfile words: quote removal and `$VAR` / `${VAR}` / `${VAR:-x}` / `${VAR:+x}` expansion.

Words split at unquoted whitespace in the source, so a value that expands to text with spaces
stays one word (Docker's rule). The escape character (`\\` or the directive's backquote)
makes the next character literal outside single quotes.
"""

from __future__ import annotations

from collections.abc import Mapping


class WordError(ValueError):
    """A word that cannot be processed (an unterminated quote or `${`); the caller names it."""


def split_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """The words of `text` with quotes removed and variables expanded from `env`."""
    return _Lexer(text, env, escape, split=True).run()


def expand_word(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """`text` as one word: quotes removed and variables expanded, whitespace kept."""
    words = _Lexer(text, env, escape, split=False).run()
    return words[0] if words else ""


def expand_variables(text: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Only `$VAR` substitution (quotes and whitespace kept): for COPY heredoc bodies."""
    lexer = _Lexer(text, env, escape, split=False)
    out: list[str] = []
    while lexer.pos < len(text):
        char = text[lexer.pos]
        if char == escape and text[lexer.pos + 1 : lexer.pos + 2] == "$":
            out.append("$")
            lexer.pos += 2
        else:
            out.append(lexer._character_or_variable(char))
    return "".join(out)


def key_values(
    text: str, env: Mapping[str, str], escape: str = "\\", *, legacy: bool = True
) -> list[tuple[str, str]]:
    """`ENV`/`LABEL` pairs: `k=v k2="v 2"`, or the legacy `key value with spaces` form."""
    words = split_words(text, env, escape)
    if not words:
        return []
    if "=" not in _raw_first_word(text) and legacy:
        key, _, rest = text.strip().partition(" ")
        return [(expand_word(key, env, escape), expand_word(rest.strip(), env, escape))]
    pairs: list[tuple[str, str]] = []
    for word in words:
        key, equals, value = word.partition("=")
        if not equals or not key:
            raise WordError(f'"{word}" is not KEY=VALUE')
        pairs.append((key, value))
    return pairs


def _raw_first_word(text: str) -> str:
    return text.strip().split(None, 1)[0] if text.strip() else ""


class _Lexer:
    def __init__(self, text: str, env: Mapping[str, str], escape: str, *, split: bool) -> None:
        self.text = text
        self.env = env
        self.escape = escape
        self.split = split
        self.pos = 0

    def run(self) -> list[str]:
        """The words; an unquoted word that expands to nothing is dropped, as in a shell."""
        words: list[str] = []
        current: list[str] = []
        started = quoted = False
        text = self.text if self.split else self.text.strip()
        self.text = text

        def finish() -> None:
            word = "".join(current)
            if word or quoted or not self.split:
                words.append(word)

        while self.pos < len(text):
            char = text[self.pos]
            if char.isspace() and self.split:
                if started:
                    finish()
                current, started, quoted = [], False, False
                self.pos += 1
                continue
            started = True
            if char == self.escape:
                self.pos += 1
                if self.pos < len(text):
                    current.append(text[self.pos])
                    self.pos += 1
            elif char == "'":
                end = text.find("'", self.pos + 1)
                if end < 0:
                    raise WordError("unterminated single quote")
                current.append(text[self.pos + 1 : end])
                quoted = True
                self.pos = end + 1
            elif char == '"':
                self.pos += 1
                current.append(self._double_quoted())
                quoted = True
            else:
                current.append(self._character_or_variable(char))
        if started:
            finish()
        return words

    def _double_quoted(self) -> str:
        text = self.text
        out: list[str] = []
        while self.pos < len(text):
            char = text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(out)
            if char == self.escape and self.pos + 1 < len(text):
                following = text[self.pos + 1]
                if following in ('"', "$", self.escape):
                    out.append(following)
                    self.pos += 2
                    continue
                out.append(char)
                self.pos += 1
            else:
                out.append(self._character_or_variable(char))
        raise WordError("unterminated double quote")

    def _character_or_variable(self, char: str) -> str:
        """`char` (the one at `pos`) as itself, or the expansion of the `$` variable it starts."""
        if char == "$":
            return self._variable()
        self.pos += 1
        return char

    def _variable(self) -> str:
        text = self.text
        self.pos += 1  # the "$"
        if self.pos >= len(text):
            return "$"
        if text[self.pos] == "{":
            end = self._closing_brace(self.pos + 1)
            body = text[self.pos + 1 : end]
            self.pos = end + 1
            return self._braced(body)
        start = self.pos
        while self.pos < len(text) and (text[self.pos].isalnum() or text[self.pos] == "_"):
            self.pos += 1
        name = text[start : self.pos]
        if not name:
            return "$"
        return self.env.get(name, "")

    def _closing_brace(self, start: int) -> int:
        depth = 1
        index = start
        while index < len(self.text):
            if self.text[index] == "{":
                depth += 1
            elif self.text[index] == "}":
                depth -= 1
                if depth == 0:
                    return index
            index += 1
        raise WordError("unterminated ${")

    def _braced(self, body: str) -> str:
        for operator in (":-", ":+", "-", "+"):
            name, found, word = body.partition(operator)
            if found and name and (name.isidentifier()):
                value = self.env.get(name)
                word_value = expand_word(word, self.env, self.escape)
                if operator == ":-":
                    return value if value else word_value
                if operator == ":+":
                    return word_value if value else ""
                if operator == "-":
                    return value if value is not None else word_value
                return word_value if value is not None else ""
        if not body.replace("_", "a").isalnum():
            raise WordError(f'"${{{body}}}" is not a supported substitution')
        return self.env.get(body, "")
