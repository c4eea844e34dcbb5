"""A one-file Django project for the attribution end-to-end test (issue #18).

ASGI (`uvicorn attr_django_app:application`): `/r/<rid>` is an async view — `a` in the view,
`b`, `c` as `asyncio.gather` children, `t` in an `asyncio.to_thread` worker.
WSGI (`python attr_django_app.py runserver 127.0.0.1:PORT --noreload`, Django's threaded
development server): `/r/<rid>` is a sync view — `a`, `b` through a per-thread requests.Session.
The rid rides in every call's query (see attr_app.py).
"""

import asyncio
import os
import random
import sys
import threading
import time

import attr_deps
import django
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

from attr_deps import UP, blocking_dep

ASGI = os.environ.get("ATTR_DJANGO_MODE", "asgi") == "asgi"

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="attribution-test-only",
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
    DATA_UPLOAD_MAX_MEMORY_SIZE=1 << 20,
    LOGGING_CONFIG=None,
)
django.setup()


if ASGI:
    client = attr_deps.new_client()

    async def dep(rid, tag):
        await attr_deps.dep(client, rid, tag)

    async def handle(request, rid):
        body = request.body
        await dep(rid, "a")
        await asyncio.gather(dep(rid, "b"), dep(rid, "c"))
        await asyncio.to_thread(blocking_dep, rid, "t")
        return sized(f"{rid} {len(body)}\n")

else:
    import requests

    local = threading.local()

    def dep(rid, tag):
        time.sleep(random.random() * 0.02)
        s = getattr(local, "s", None)
        if s is None:
            s = local.s = requests.Session()
        s.get(f"{UP}/json/dep?rid={rid}&tag={tag}", timeout=10).raise_for_status()

    def handle(request, rid):
        body = request.body
        dep(rid, "a")
        dep(rid, "b")
        return sized(f"{rid} {len(body)}\n")


def sized(text):
    # Django's ASGI handler streams a response without Content-Length (chunked); the test's
    # client reads Content-Length framing, as for every other server.
    r = HttpResponse(text, content_type="text/plain")
    r["Content-Length"] = str(len(r.content))
    return r


urlpatterns = [path("r/<str:rid>", handle)]

if ASGI:
    from django.core.asgi import get_asgi_application

    application = get_asgi_application()

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
