"""Authentication and authorisation: wallet sign-in (SIWE), API keys, sessions and roles.

Other domains need only :mod:`edgeledger.auth.dependencies` (``get_principal``, ``require_roles``,
``require_writer``, ``ensure_owner_or_admin``) and :class:`edgeledger.auth.models.Role`.
"""
