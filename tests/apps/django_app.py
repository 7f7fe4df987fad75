"""A one-file Django project: `django_app:application` (WSGI) and `django_app:asgi_application`."""

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="tests-only",
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402


def index(request):
    return JsonResponse({"framework": "django", "path": request.path, "method": request.method,
                         "q": request.GET.get("q"), "body": request.body.decode()})


urlpatterns = [path("", index), path("hello/", index)]

application = get_wsgi_application()
asgi_application = get_asgi_application()
