"""The smallest WSGI app: `tricorn examples.hello_wsgi:app`."""


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"Hello, world!\n"]
