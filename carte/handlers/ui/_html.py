"""Server-rendered HTML: escaping, the page frame, tables and the answer with its headers.

Pages carry no inline script (the Content-Security-Policy allows only /ui/assets/ui.js);
what the script needs rides in ``data-`` attributes. A page marked ``live`` is refreshed in
place: the script asks for the same URL with ``X-Carte-Fragment: 1`` and gets only the
``<main>`` content back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from quart import Response, request

NAV = (
    ("nodes", "/ui/nodes", "Nodes"),
    ("stacks", "/ui/stacks", "Stacks & services"),
    ("containers", "/ui/containers", "Containers"),
    ("events", "/ui/events", "Events"),
)
FRAGMENT_HEADER = "X-Carte-Fragment"


def esc(value: object) -> str:
    return escape(str(value), quote=True)


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, empty: str = "none") -> str:
    """A table of already-escaped cells; ``empty`` (text) when there are no rows."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<p class="empty">{esc(empty)}</p>'
    head = "".join(f"<th>{esc(title)}</th>" for title in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def link(href: str, text: object) -> str:
    return f'<a href="{esc(href)}">{esc(text)}</a>'


def page(
    title: str,
    body: str,
    *,
    section: str,
    csrf: str,
    live: float = 0.0,
    session: bool = False,
    status: int = 200,
) -> Response:
    """The page (or only its ``<main>`` content when the script refreshes it)."""
    if request.headers.get(FRAGMENT_HEADER) == "1":
        return html_response(body, status)
    nav = "".join(
        f'<a href="{href}"{" class=current" if key == section else ""}>{esc(text)}</a>'
        for key, href, text in NAV
    )
    logout = (
        '<form method="post" action="/ui/logout" class="logout">'
        f'<input type="hidden" name="csrf" value="{esc(csrf)}"><button>Log out</button></form>'
        if session
        else ""
    )
    refresh = f' data-live="{int(live * 1000)}"' if live else ""
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)} · Carte</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="stylesheet" href="/ui/assets/ui.css">'
        '<script src="/ui/assets/ui.js" defer></script></head><body>'
        f'<header><span class="brand">Carte</span><nav>{nav}</nav>{logout}</header>'
        f'<h1>{esc(title)}</h1><main id="main"{refresh}>{body}</main></body></html>'
    )
    return html_response(document, status)


def html_response(text: str, status: int = 200) -> Response:
    response = Response(text, status=status, content_type="text/html; charset=utf-8")
    secure_headers(response)
    return response


def secure_headers(response: Response) -> None:
    """No framing, no foreign script or connection, nothing cached or leaked in referrers."""
    host = request.host
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; img-src 'self' data:; "
        f"connect-src 'self' ws://{host} wss://{host}; frame-ancestors 'none'; form-action 'self'"
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"


def see_other(location: str) -> Response:
    """303 to ``location`` (a path of this site): after a form, or to the front page."""
    response = Response("", status=303)
    response.headers["Location"] = location
    response.headers["Cache-Control"] = "no-store"
    return response
