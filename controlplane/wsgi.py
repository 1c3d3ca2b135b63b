"""The WSGI application that servers such as gunicorn load.

It refuses to start on an insecure deployment (controlplane/checks.py). runserver, a development
server, serves Django's own handler instead (WSGI_APPLICATION is None).
"""

import os

from django.core.wsgi import get_wsgi_application

from controlplane.checks import refuse_insecure_deployment

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
application = get_wsgi_application()
refuse_insecure_deployment()
