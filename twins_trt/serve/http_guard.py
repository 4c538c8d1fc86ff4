"""The HTTP endpoint twins-serve exposes: Triton's, behind a guard that refuses bodies Triton cannot survive.

tritonserver 2.51 (the one PyTriton 0.7 ships) dies with SIGSEGV on an HTTP request body of 4 MiB or more,
whatever it holds (measured here: 4,100,000 bytes answered, 4,194,304 crashed the server;
triton-inference-server/server#5840). So Triton's HTTP listens on an internal loopback port and this guard,
on the user's port, answers a body over `max_body` or an empty inference body itself, with a message that
says what was wrong, and forwards every other request to Triton unchanged (the KServe v2 protocol, binary
extension included). gRPC goes to Triton directly: its endpoint takes large messages and refuses them cleanly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading

log = logging.getLogger(__name__)

TRITON_HTTP_BODY_CRASH = 4 * 1024 * 1024  # the smallest body that crashed tritonserver 2.51 here
MAX_BODY = TRITON_HTTP_BODY_CRASH - 64 * 1024  # what the guard lets through
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host", "content-length",
        "proxy-connection", "expect"}


def _error(status: int, message: str):
    from aiohttp import web

    return web.Response(status=status, text=json.dumps({"error": message}), content_type="application/json")


class HttpGuard:
    """`start()` serves on host:port in a thread of its own; `stop()` closes it (requests in flight finish)."""

    def __init__(self, host: str, port: int, upstream_port: int, max_body: int = MAX_BODY):
        self.host, self.port, self.upstream, self.max_body = host, port, f"http://{host}:{upstream_port}", max_body
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stopped: asyncio.Event | None = None
        self._error: BaseException | None = None

    def too_large(self, size: int) -> str:
        return (f"request body of {size} bytes is over this server's HTTP limit of {self.max_body} bytes "
                f"(tritonserver 2.51's HTTP endpoint crashes on {TRITON_HTTP_BODY_CRASH} bytes or more); send fewer "
                "images per request, or use gRPC")

    async def _handle(self, request):
        from aiohttp import web

        size = request.content_length
        if size is not None and size > self.max_body:
            return _error(413, self.too_large(size))
        chunks, got = [], 0
        while got <= self.max_body:  # no Content-Length (chunked): read up to the limit, never the whole of it
            chunk = await request.content.read(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > self.max_body:
            return _error(413, self.too_large(got))
        body = b"".join(chunks)
        if request.method == "POST" and request.path.endswith("/infer") and not body:
            return _error(400, "empty request body: an inference request needs a JSON header naming its inputs "
                               "(KServe v2 protocol), e.g. {\"inputs\": [{\"name\": ..., \"shape\": ..., "
                               "\"datatype\": \"FP32\", \"data\": [...]}]}")
        # aiohttp has decoded a compressed body already: Triton gets it plain (its response goes back as it is)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP | {"content-encoding"}}
        try:
            async with self._session.request(request.method, self.upstream + request.rel_url.path_qs, data=body,
                                             headers=headers) as up:
                payload = await up.read()
                out = {k: v for k, v in up.headers.items() if k.lower() not in _HOP}
                return web.Response(status=up.status, body=payload, headers=out)
        except Exception as e:  # Triton is not there (stopping, or died): say so, as a gateway would
            return _error(502, f"the Triton server behind this endpoint did not answer ({type(e).__name__})")

    async def _main(self) -> None:
        import aiohttp
        from aiohttp import web

        self._stopped = asyncio.Event()
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), auto_decompress=False,
                                              timeout=aiohttp.ClientTimeout(total=None))
        app = web.Application(client_max_size=self.max_body + 1)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.port).start()
        except BaseException:
            await runner.cleanup()
            await self._session.close()
            raise
        self._ready.set()
        await self._stopped.wait()
        await runner.cleanup()  # stops listening, lets requests in flight finish
        await self._session.close()

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as e:
            self._error = e
            self._ready.set()
        finally:
            self._loop.close()

    def start(self, timeout_s: float = 10.0) -> HttpGuard:
        self._thread = threading.Thread(target=self._run, name="twins-serve-http", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s) or self._error is not None:
            raise OSError(f"cannot serve HTTP on {self.host}:{self.port}: {self._error or 'timed out'}")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopped is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=30)
        self._thread = None
