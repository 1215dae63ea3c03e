"""The web app for creators and merchants: server-rendered pages (Jinja2) under /app, in English and
Simplified Chinese, signed in with the browser's wallet (EIP-1193 + Sign-In with Ethereum).

* ``i18n.py``      language negotiation (cookie, Accept-Language), the message catalogs (``catalogs/*.json``,
                   one file per area, both languages), locale formatting of numbers, UTC dates and token
                   amounts from integer minor units (no floats);
* ``session.py``   SIWE sign-in and sign-out, the HttpOnly SameSite=Strict session cookie scoped to /app,
                   the page and JSON-endpoint dependencies (role-aware), the same-origin check;
* ``views.py``     the shared routes (home, sign-in, language switch, static files), :func:`render` (the
                   language, the role's navigation, a strict Content-Security-Policy) and the list of
                   areas whose routers it includes;
* ``prepared.py``  what the server hands the wallet: integers beyond 2**53 as decimal strings;
* ``creator.py``, ``creator_views.py``  the creators' area: assets with provenance, licence, split,
                   lineage and deliveries by region and day; upload and registration by drag and drop;
                   earnings; claims from the wallet or relayed; licence and split updates;
* ``merchant.py``, ``merchant_views.py``  the merchants' area: escrow and shortfall with deposits from the
                   wallet (approve, then deposit), rate cards, CDN bill imports with line-numbered errors,
                   reconciliation cases to decide, settlements with their challenge window, challenges
                   from the wallet, statements to download;
* ``templates/``, ``static/``  pages, ``app.css`` (mobile first) and the scripts: ``wallet.js`` (EIP-1193
                   helpers: connect, sign, send a prepared transaction and wait for its receipt),
                   ``signin.js`` and each area's own script.
"""
