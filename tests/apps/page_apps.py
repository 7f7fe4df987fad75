"""A site whose page names its assets, for `tricorn bench` scenarios with `assets = true`: a
stylesheet that names a font and an image, a script, a large image, an icon, one missing image,
and references a browser would not fetch from this server (another origin, a data: URL)."""

import hashlib

MODIFIED = b"Wed, 02 Dec 2026 10:00:00 GMT"
BIG = b"\x89PNG" + b"x" * (1 << 20)
FILES = {
    "/static/site.css": (b"text/css", b'@font-face { font-family: f; src: url("fonts/f.woff2"); }\n'
                                      b"body { background: url(img/bg.png) }\n"),
    "/static/fonts/f.woff2": (b"font/woff2", b"wOF2" + b"f" * 2000),
    "/static/img/bg.png": (b"image/png", b"\x89PNG" + b"b" * 500),
    "/static/app.js": (b"text/javascript", b"console.log('hi');\n"),
    "/static/big.png": (b"image/png", BIG),
    "/favicon.ico": (b"image/x-icon", b"\x00\x00\x01\x00"),
}
PAGE = b"""<!doctype html>
<html><head>
<link rel="stylesheet" href="/static/site.css">
<link rel="icon" href="/favicon.ico">
<script src="static/app.js"></script>
<script src="http://elsewhere.example/tracker.js"></script>
</head><body>
<img src="/static/big.png" alt="">
<img src="/missing.png" alt="">
<img src="data:image/png;base64,AAAA" alt="">
<a href="/next">links are not fetched</a>
</body></html>
"""


async def site(scope, receive, send):
    if scope["type"] != "http":
        return
    path = scope["path"]
    headers = dict(scope["headers"])
    if path == "/":
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", b"text/html; charset=utf-8"), (b"set-cookie", b"session=s3cret; Path=/; HttpOnly")]})
        await send({"type": "http.response.body", "body": PAGE})
        return
    if path not in FILES:
        await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"9")]})
        await send({"type": "http.response.body", "body": b"not found"})
        return
    kind, body = FILES[path]
    if path == "/favicon.ico":  # validated by date, the rest by ETag
        validator = (b"last-modified", MODIFIED)
        fresh = headers.get(b"if-modified-since") == MODIFIED
    else:
        validator = (b"etag", b'"' + hashlib.sha1(body).hexdigest()[:16].encode() + b'"')
        fresh = headers.get(b"if-none-match") == validator[1]
    if fresh:
        await send({"type": "http.response.start", "status": 304, "headers": [validator]})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", kind), validator, (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
