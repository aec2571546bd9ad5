"""The web console's files (`web/console/`), served at `/ui` by the HTTP door: plain HTML, CSS and
JavaScript modules, no build step and nothing to run beside the gateway. The pages read the same
HTTP APIs any client uses, under the key the person signs in with."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

FILES = Path(__file__).with_name("console")
_TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
# Only the console's own files, scripts and connections: no inline script, no other origin, no
# framing (a page that shows what providers wrote must not run it).
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' blob:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


class ConsoleRoutes:
    def __init__(self) -> None:
        # Read once: a handful of small files, served from memory.
        self._files = {
            path.name: (path.read_bytes(), _TYPES[path.suffix])
            for path in sorted(FILES.iterdir())
            if path.suffix in _TYPES
        }

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/ui", self.home)
        app.router.add_get("/ui/", self.index)
        app.router.add_get("/ui/{name}", self.file)

    async def home(self, request: web.Request) -> web.Response:
        raise web.HTTPFound("/ui/")

    async def index(self, request: web.Request) -> web.Response:
        return self._answer("index.html")

    async def file(self, request: web.Request) -> web.Response:
        return self._answer(request.match_info["name"])

    def _answer(self, name: str) -> web.Response:
        found = self._files.get(name)
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(body=body, content_type=content_type, charset="utf-8", headers=_HEADERS)
