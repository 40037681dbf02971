"""HTTP API route selection: `METHOD /path/{param}/{proxy+}` to the route that serves it.

https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-routes.html
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from infra.template import HttpRoute

_SEGMENT = re.compile(r"^\{([A-Za-z0-9_.-]+)(\+?)\}$")


@dataclass(frozen=True)
class RouteMatch:
    route: HttpRoute
    path_parameters: dict[str, str]

    @property
    def route_key(self) -> str:
        return f"{self.route.method} {self.route.path}"


@dataclass(frozen=True)
class _CompiledRoute:
    route: HttpRoute
    segments: tuple[tuple[str, str], ...]  # ("static"|"param"|"greedy", text or name)
    specificity: tuple[int, ...] = field(compare=False)

    @classmethod
    def compile(cls, route: HttpRoute) -> _CompiledRoute:
        if not route.path.startswith("/"):
            raise ValueError(f"route path must start with '/': {route.path!r}")
        parts = route.path.split("/")[1:]
        segments: list[tuple[str, str]] = []
        for i, part in enumerate(parts):
            m = _SEGMENT.match(part)
            if m is None:
                if "{" in part or "}" in part:
                    raise ValueError(f"unsupported path segment {part!r} in {route.path!r}")
                segments.append(("static", part))
            elif m.group(2):
                if i != len(parts) - 1:
                    raise ValueError(f"greedy {part!r} must be the last segment: {route.path!r}")
                segments.append(("greedy", m.group(1)))
            else:
                segments.append(("param", m.group(1)))
        rank = {"static": 2, "param": 1, "greedy": 0}
        return cls(route, tuple(segments), tuple(rank[kind] for kind, _ in segments))

    def match(self, parts: list[str]) -> dict[str, str] | None:
        params: dict[str, str] = {}
        for i, (kind, text) in enumerate(self.segments):
            if kind == "greedy":
                rest = parts[i:]
                if not rest or not any(rest):
                    return None
                params[text] = "/".join(rest)
                return params
            if i >= len(parts):
                return None
            if kind == "static":
                if parts[i] != text:
                    return None
            elif not parts[i]:
                return None
            else:
                params[text] = parts[i]
        return params if len(parts) == len(self.segments) else None


class RouteTable:
    """Most specific route wins: static segments over `{param}` over `{proxy+}`; a route's own
    method over `ANY`. No route for the path and method: API Gateway answers 404."""

    def __init__(self, routes: Iterable[HttpRoute]) -> None:
        self._routes = [_CompiledRoute.compile(r) for r in routes]
        keys = [f"{c.route.method} {c.route.path}" for c in self._routes]
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        if duplicates:
            raise ValueError(f"duplicate routes: {duplicates}")

    @property
    def routes(self) -> list[HttpRoute]:
        return [c.route for c in self._routes]

    def match(self, method: str, path: str) -> RouteMatch | None:
        parts = path.split("/")[1:] if path.startswith("/") else [path]
        best: tuple[tuple[tuple[int, ...], bool], RouteMatch] | None = None
        for compiled in self._routes:
            if compiled.route.method not in (method, "ANY"):
                continue
            params = compiled.match(parts)
            if params is None:
                continue
            key = (compiled.specificity, compiled.route.method == method)
            if best is None or key > best[0]:
                best = (key, RouteMatch(compiled.route, params))
        return best[1] if best else None
