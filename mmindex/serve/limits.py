"""Request-size limit and response headers: ASGI plumbing kept out of the routes."""

from __future__ import annotations

from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.responses import Response

_BODY_METHODS = {"POST", "PUT", "PATCH"}

# The page loads nothing from elsewhere; blob: is for thumbnails fetched with a token.
_CSP = ("default-src 'self'; img-src 'self' blob: data:; object-src 'none'; "
        "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


class _BodyTooLarge(HTTPException):
    """Raised from inside the body stream. An HTTPException, because FastAPI re-raises those
    while it turns any other error met reading a body into a 400."""

    def __init__(self, max_bytes: int):
        super().__init__(413, f"the request is larger than {max_bytes} bytes")
        self.code = "too_large"


class BodySizeLimit:
    """Refuse bodies over max_bytes with 413 before they are parsed or spooled to disk:
    at once from Content-Length, or mid-stream for a chunked body that grows too big."""

    def __init__(self, app, max_bytes: int, refuse: Callable[[], Response]):
        self.app, self.max_bytes, self.refuse = app, max_bytes, refuse

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] not in _BODY_METHODS:
            return await self.app(scope, receive, send)
        if self._declared_length(scope) > self.max_bytes:
            return await self.refuse()(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise _BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, counted_receive, send)

    @staticmethod
    def _declared_length(scope) -> int:
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    return int(value)
                except ValueError:
                    return 0
        return 0


_SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"),
                     (b"content-security-policy", _CSP.encode()),
                     (b"referrer-policy", b"no-referrer")]


class SecurityHeaders:
    """Adds the headers above to every response (pure ASGI: no per-request task overhead)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in _SECURITY_HEADERS if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HostCheck:
    """Refuse requests whose Host header is not one of `allowed` (400, JSON). On loopback this
    stops a DNS-rebinding page from reading the API from the user's own browser."""

    def __init__(self, app, allowed: list[str], refuse: Callable[[str], Response]):
        self.app, self.allowed, self.refuse = app, {a.lower() for a in allowed}, refuse

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        host = host_name(dict(scope.get("headers", ())).get(b"host", b"").decode("latin-1"))
        if host not in self.allowed:
            return await self.refuse(host)(scope, receive, send)
        await self.app(scope, receive, send)


def host_name(header: str) -> str:
    """'127.0.0.1:8765' -> '127.0.0.1', '[::1]:8765' -> '::1', 'Example.com' -> 'example.com'."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header
