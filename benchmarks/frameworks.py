"""Framework apps for the benchmarks (kept apart so the hello cases load no framework)."""


def _fastapi():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/")
    def index():  # a sync route: FastAPI runs it on anyio's thread pool
        return {"message": "Hello, world!", "items": list(range(10))}

    return app


def _fastapi_async():
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/")
    async def index():
        return {"message": "Hello, world!", "items": list(range(10))}

    return app


def _flask():
    from flask import Flask, jsonify

    app = Flask(__name__)

    @app.route("/")
    def index():
        return jsonify(message="Hello, world!", items=list(range(10)))

    return app


try:
    fastapi_json = _fastapi()
except ImportError:  # pragma: no cover
    fastapi_json = None
try:
    fastapi_async = _fastapi_async()
except ImportError:  # pragma: no cover
    fastapi_async = None
try:
    flask_json = _flask()
except ImportError:  # pragma: no cover
    flask_json = None


def _django():
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], ROOT_URLCONF=__name__, SECRET_KEY="benchmark",
                           MIDDLEWARE=[], INSTALLED_APPS=[])
        django.setup()
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()


def _django_view(request):
    from django.http import JsonResponse

    return JsonResponse({"message": "Hello, world!", "items": list(range(10))})


try:
    from django.urls import path as _path

    urlpatterns = [_path("", _django_view)]
    django_json = _django()
except ImportError:  # pragma: no cover
    django_json = None


def _starlette():
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def index(request):
        return PlainTextResponse("Hello, world!")

    return Starlette(routes=[Route("/", index)])


try:
    starlette_plain = _starlette()
except ImportError:  # pragma: no cover
    starlette_plain = None
