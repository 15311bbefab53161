"""Refuse query parameters a route does not declare, and single-valued ones given twice.

FastAPI ignores an unknown query parameter and keeps the last of a repeated one,
so a client's typo (``?staus=open``) silently returns everything. The API's
OpenAPI spec declares every parameter; a request outside it gets the same 422
as any other validation error.
"""

from __future__ import annotations

import collections.abc
import types
import typing
from collections import Counter
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError

_SEQUENCES = (list, tuple, set, frozenset, collections.abc.Sequence, collections.abc.Set)


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _is_sequence(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence(a) for a in typing.get_args(annotation) if a is not type(None))
    return origin in _SEQUENCES or annotation in _SEQUENCES


def _declared(dependant: Any) -> dict[str, bool]:
    """Query parameter name -> takes several values, over the route and its dependencies."""
    out: dict[str, bool] = {}
    for field in dependant.query_params:
        out[field.alias] = _is_sequence(field.field_info.annotation)
    for sub in dependant.dependencies:
        out.update(_declared(sub))
    return out


def reject_unexpected_query(request: Request) -> None:
    """A dependency for every route (see ``crew.api.create_app``)."""
    if not request.query_params:
        return
    dependant = getattr(request.scope.get("route"), "dependant", None)
    if dependant is None:
        return
    declared = _declared(dependant)
    errors = []
    for name, count in Counter(k for k, _ in request.query_params.multi_items()).items():
        if name not in declared:
            errors.append(
                {
                    "loc": ["query", name],
                    "msg": "unexpected query parameter",
                    "type": "extra_forbidden",
                }
            )
        elif count > 1 and not declared[name]:
            errors.append(
                {"loc": ["query", name], "msg": "given more than once", "type": "value_error"}
            )
    if errors:
        raise RequestValidationError(errors)
