"""Shared request dependencies: the app's one chain client, IPFS client and settings."""

from __future__ import annotations

from fastapi import Request

from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.ipfs import IpfsClient


def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_chain(request: Request) -> ChainClient:
    return request.app.state.chain


def get_ipfs(request: Request) -> IpfsClient:
    return request.app.state.ipfs
