"""The local gateway's streaming route: the very app the streaming function deploys
(handlers/stream_app.py), mounted on the gateway's port beside the HTTP routes."""

from __future__ import annotations

from aiohttp import web

from handlers import stream_app


def route_defs() -> list[web.RouteDef]:
    return stream_app.route_defs()
