"""Authentication and authorisation: wallet sign-in (SIWE), API keys, sessions and roles.

Other domains need only :mod:`edgeledger.auth.dependencies` (``get_principal``, ``require_roles``,
``require_writer``, ``ensure_owner_or_admin``) and :class:`edgeledger.auth.models.Role`.

* ``models.py``        users, API keys, sessions, SIWE nonces, auditor scopes (tables and schemas);
* ``service.py``       sign-in, key and session issuing and checking, scopes;
* ``dependencies.py``  who is calling (``get_principal``, the per-process principal cache, ``Caller``) and
                       may they (``require_roles``, ownership checks);
* ``identity.py``      the middleware that settles the caller (client address behind trusted proxies,
                       authenticated credential) before a body is read, and refuses a state-changing
                       request without a valid caller with 401 before reading its body;
* ``views.py``         the /auth and /admin routes.
"""
