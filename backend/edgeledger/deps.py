"""Shared request dependencies: the app's one chain client, IPFS client and settings.

Async on purpose: they only read ``app.state``, and FastAPI would run a sync dependency in the thread
pool (a hand-off per dependency and request)."""

from __future__ import annotations

from fastapi import Request

from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.ipfs import IpfsClient


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_chain(request: Request) -> ChainClient:
    return request.app.state.chain


async def get_ipfs(request: Request) -> IpfsClient:
    return request.app.state.ipfs
