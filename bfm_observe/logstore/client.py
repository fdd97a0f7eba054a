"""A client of Loki's query HTTP API and Tempo's trace-by-id API: one client for a real
Loki (and Tempo) and for BFM's embedded store, which serves both.

Loki: https://grafana.com/docs/loki/latest/reference/loki-http-api/ ; Tempo:
https://grafana.com/docs/tempo/latest/api_docs/#query . Queries ask for Loki's
``categorize-labels`` response encoding, so a Loki 3 answers stream labels, structured
metadata and parsed labels apart; a store that ignores the flag answers the default
encoding; ``loki_answers`` reads all forms. Every failure is a :class:`LokiClientError`
whose message is a sentence naming the server and what to check.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import requests

from bfm_observe.logstore.loki_answers import (
    CATEGORIZE_LABELS,
    LogLine,
    QueryResult,
    Series,
    parse_label_sets,
    parse_query_data,
    parse_str_list,
)
from bfm_observe.logstore.records import DEFAULT_TENANT, SpanRecord

__all__ = [
    "DEFAULT_URL",
    "LogLine",
    "LokiAuthError",
    "LokiClient",
    "LokiClientError",
    "LokiQueryError",
    "LokiResponseError",
    "LokiServerError",
    "LokiUnreachable",
    "QueryResult",
    "Series",
]

DEFAULT_URL = "http://127.0.0.1:3100"
ENCODING_FLAGS_HEADER = "X-Loki-Response-Encoding-Flags"
Direction = Literal["backward", "forward"]
_BODY_HEAD_CHARS = 200
_T = TypeVar("_T")


class LokiClientError(Exception):
    """Any failure of a request to Loki; ``url`` is the URL asked."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class LokiUnreachable(LokiClientError):
    """No usable answer: connection refused, timeout, DNS, or a server failure (5xx)."""


class LokiServerError(LokiUnreachable):
    """The server answered 5xx; ``status`` and ``body_head`` (its first 200 characters)."""

    def __init__(self, message: str, *, url: str, status: int, body_head: str) -> None:
        super().__init__(message, url=url)
        self.status, self.body_head = status, body_head


class LokiQueryError(LokiClientError):
    """Loki refused the request (400); ``message`` is its plain-text reason."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message, url=url)
        self.message = message


class LokiAuthError(LokiClientError):
    """401 or 403: the bearer token or the tenant (``X-Scope-OrgID``) is missing or wrong."""

    def __init__(self, message: str, *, url: str, status: int) -> None:
        super().__init__(message, url=url)
        self.status = status


class LokiResponseError(LokiClientError):
    """An answer no Loki gives: another status (404: not a Loki URL) or a malformed body."""


class LokiClient:
    """Loki's query API at ``url``; traces from ``traces_url`` (default ``url``)."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        tenant: str | None = None,
        timeout_s: float = 10.0,
        traces_url: str | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.traces_url = (traces_url or url).rstrip("/")
        self.tenant = tenant
        self.timeout_s = timeout_s
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        if tenant:
            self._session.headers["X-Scope-OrgID"] = tenant

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> LokiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def query_range(
        self,
        query: str,
        *,
        start_ns: int,
        end_ns: int,
        limit: int = 100,
        direction: Direction = "backward",
        step_s: float | None = None,
    ) -> QueryResult:
        """``GET /loki/api/v1/query_range``: log lines, or a ``matrix`` for a metric query."""
        params = {"query": query, "start": str(start_ns), "end": str(end_ns)}
        params |= {"limit": str(limit), "direction": direction}
        if step_s is not None:
            params["step"] = format(step_s, "g")
        return self._query("/loki/api/v1/query_range", params, direction)

    def query(
        self,
        query: str,
        *,
        at_ns: int | None = None,
        limit: int = 100,
        direction: Direction = "backward",
    ) -> QueryResult:
        """``GET /loki/api/v1/query`` at ``at_ns`` (default: the server's now)."""
        params = {"query": query, "limit": str(limit), "direction": direction}
        if at_ns is not None:
            params["time"] = str(at_ns)
        return self._query("/loki/api/v1/query", params, direction)

    def labels(
        self, start_ns: int | None = None, end_ns: int | None = None, *, query: str | None = None
    ) -> list[str]:
        """``GET /loki/api/v1/labels``: the label names seen in the range."""
        params = _range_params(start_ns, end_ns, query=query)
        return self._data("/loki/api/v1/labels", params, parse_str_list)

    def label_values(
        self,
        name: str,
        start_ns: int | None = None,
        end_ns: int | None = None,
        *,
        query: str | None = None,
    ) -> list[str]:
        """``GET /loki/api/v1/label/<name>/values``."""
        path = f"/loki/api/v1/label/{quote(name, safe='')}/values"
        return self._data(path, _range_params(start_ns, end_ns, query=query), parse_str_list)

    def series(
        self, match: Sequence[str], start_ns: int | None = None, end_ns: int | None = None
    ) -> list[dict[str, str]]:
        """``GET /loki/api/v1/series``: the label sets of the streams ``match[]`` selects."""
        params = [("match[]", selector) for selector in match]
        params += list(_range_params(start_ns, end_ns).items())
        return self._data("/loki/api/v1/series", params, parse_label_sets)

    def ready(self) -> bool:
        """``GET /ready`` answered 200; False for any other answer and for no answer."""
        try:
            return self._session.get(self.url + "/ready", timeout=self.timeout_s).ok
        except requests.RequestException:
            return False

    def trace(self, trace_id: str) -> list[SpanRecord]:
        """The spans of ``trace_id`` from ``GET <traces_url>/api/traces/<id>`` (Tempo's JSON);
        an empty list when the server does not know the trace (404)."""
        from bfm_observe.logstore.wire_tempo import decode_tempo_json  # noqa: PLC0415

        url = f"{self.traces_url}/api/traces/{trace_id.lower()}"
        response = self._get(url, None, {"Accept": "application/json"}, not_found_ok=True)
        if response is None:
            return []
        doc = _json(response, url)
        if not isinstance(doc, dict):
            raise _malformed(url, "the trace is not a JSON object")
        try:
            return decode_tempo_json(doc, self.tenant or DEFAULT_TENANT)
        except (ValueError, KeyError, TypeError) as exc:
            raise _malformed(url, f"the trace cannot be decoded: {exc}") from None

    def _query(self, path: str, params: dict[str, str], direction: Direction) -> QueryResult:
        def parse(data: Any) -> QueryResult:
            return parse_query_data(data, newest_first=direction == "backward")

        return self._data(path, params, parse, {ENCODING_FLAGS_HEADER: CATEGORIZE_LABELS})

    def _data(
        self,
        path: str,
        params: Any,
        parse: Callable[[Any], _T],
        headers: Mapping[str, str] | None = None,
    ) -> _T:
        url = self.url + path
        response = self._get(url, params, headers)
        assert response is not None  # only trace() takes a 404 for an answer
        doc = _json(response, url)
        if not isinstance(doc, dict):
            raise _malformed(url, "not a JSON object")
        if doc.get("status") == "error":  # Prometheus-style errors, as some proxies answer
            raise LokiQueryError(str(doc.get("error") or "the query failed"), url=url)
        if doc.get("status") != "success":
            raise _malformed(url, f"status is {doc.get('status')!r}, not 'success'")
        try:
            return parse(doc.get("data"))
        except ValueError as exc:
            raise _malformed(url, str(exc)) from None

    def _get(
        self,
        url: str,
        params: Any,
        headers: Mapping[str, str] | None = None,
        *,
        not_found_ok: bool = False,
    ) -> requests.Response | None:
        try:
            response = self._session.get(
                url, params=params, headers=dict(headers or {}), timeout=self.timeout_s
            )
        except requests.Timeout:
            raise LokiUnreachable(
                f"Loki at {url} did not answer within {self.timeout_s:g} s; is it overloaded, "
                "or does the URL name something that accepts but never answers?",
                url=url,
            ) from None
        except requests.RequestException as exc:
            raise LokiUnreachable(
                f"cannot reach Loki at {url} ({_reason(exc)}); is the log store running "
                "and the URL right?",
                url=url,
            ) from None
        status, body = response.status_code, _head(response.text)
        if status == 200:
            return response
        if status == 404 and not_found_ok:
            return None
        if status == 400:
            raise LokiQueryError(response.text.strip() or "bad request (no reason given)", url=url)
        if status in (401, 403):
            raise LokiAuthError(
                f"Loki at {url} answered {status} ({body or 'no reason given'}); "
                "give the right bearer token and tenant (X-Scope-OrgID)",
                url=url,
                status=status,
            )
        if status >= 500:
            raise LokiServerError(
                f"Loki at {url} failed with {status} ({body or 'no body'}); "
                "check the log store's own logs",
                url=url,
                status=status,
                body_head=body,
            )
        hint = "; is this the URL of a Loki?" if status == 404 else ""
        raise LokiResponseError(
            f"Loki at {url} answered {status} ({body or 'no body'}){hint}", url=url
        )


def _range_params(
    start_ns: int | None, end_ns: int | None, *, query: str | None = None
) -> dict[str, str]:
    params = {"start": start_ns, "end": end_ns, "query": query}
    return {name: str(value) for name, value in params.items() if value is not None}


def _reason(exc: requests.RequestException) -> str:
    text = str(exc)
    for known in ("Connection refused", "Name or service not known", "No route to host"):
        if known in text:
            return known.lower()
    return type(exc).__name__


def _head(body: str) -> str:
    flat = " ".join(body.split())
    return flat if len(flat) <= _BODY_HEAD_CHARS else flat[:_BODY_HEAD_CHARS] + "..."


def _malformed(url: str, what: str) -> LokiResponseError:
    return LokiResponseError(
        f"the answer of {url} is not Loki's ({what}); is this the URL of a Loki?", url=url
    )


def _json(response: requests.Response, url: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise _malformed(url, f"not JSON: {_head(response.text)!r}") from None
