"""What an app sees of TLS: the ASGI scope's scheme and tls extension, the WSGI environ."""

import json


async def asgi(scope, receive, send):
    if scope["type"] != "http":
        return
    tls = scope.get("extensions", {}).get("tls")
    body = json.dumps({"scheme": scope["scheme"], "tls": tls}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


def wsgi(environ, start_response):
    keys = ("wsgi.url_scheme", "HTTPS", "SSL_PROTOCOL", "SSL_CIPHER", "SSL_CLIENT_S_DN", "SSL_CLIENT_CERT")
    body = json.dumps({key: environ.get(key) for key in keys}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
