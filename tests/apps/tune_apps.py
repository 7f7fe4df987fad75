"""Apps that `tricorn tune` must refuse to recommend a configuration for, with the reason."""


async def failing(scope, receive, send):
    """500 to everything: no configuration meets any error budget."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 500, "headers": [(b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"oops\n"})


async def routes(scope, receive, send):
    """Serves / only: a workload on another path is a mistake to report, not to tune."""
    if scope["type"] != "http":
        return
    found = scope["path"] == "/"
    body = b"ok\n" if found else b"not found\n"
    await send({"type": "http.response.start", "status": 200 if found else 404,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
