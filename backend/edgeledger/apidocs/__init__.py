"""The API's own documentation pages, served by the app with no request leaving it.

* ``views.py``  ``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) on ``/openapi.json``, their assets under
                ``/docs/assets/`` from the npm toolchain (swagger-ui-dist, redoc), and the pages'
                Content-Security-Policy;
* ``static/``   the two scripts that start Swagger UI and ReDoc (no inline script, so the policy needs
                no ``'unsafe-inline'`` for scripts).
"""
