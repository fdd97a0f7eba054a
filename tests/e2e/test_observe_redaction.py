"""No secret leaves a process configured by ``bfm_observe``: not on stderr, not in the
lines pushed to Loki, not in the spans exported over OTLP (issue 11, item 4).

A real Loki double and a real OTLP/HTTP receiver on 127.0.0.1 (``tests/support``: both
decode the wire format) receive what one configured process sends after it logged and
traced secrets every way code tends to leak them: in a message, in ``extra`` fields by
name, in an exception's text, in a URL's password, in span and event attributes and in
a span's status. Each secret is a fresh random string, so finding it anywhere in the
raw outputs is a leak. ``tests/unit/test_redaction.py`` covers the rules themselves.
"""

from __future__ import annotations

import io
import json
import logging
import secrets

import pytest
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from support.loki_receiver import LokiReceiver
from support.otlp_receiver import OtlpReceiver

import bfm_observe
from bfm_observe.redaction import REDACTED

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("clean_telemetry")]
WAIT_S = 10.0
log = logging.getLogger("bfm.test.redaction")


def test_no_secret_reaches_stderr_loki_or_the_trace_backend() -> None:
    leaked = {name: secrets.token_urlsafe(16) for name in range(9)}
    password, token, key, url_pw, attr, event, status, extra, nested = leaked.values()
    stream = io.StringIO()
    with LokiReceiver() as loki, OtlpReceiver() as otlp:
        bfm_observe.configure(
            "router",
            "a",
            loki_url=loki.url,
            otlp_endpoint=otlp.url,
            sample_ratio=1.0,
            log_stream=stream,
        )
        tracer = trace.get_tracer("bfm")
        with tracer.start_as_current_span("work") as span:
            span.set_attribute("db.password", password)
            span.set_attribute("http.request.header.authorization", f"Bearer {attr}")
            span.add_event("retry", {"detail": f"token={event}"})
            span.set_status(Status(StatusCode.ERROR, f"api_key={status}"))
            log.info("connecting to etcd://root:%s@10.0.0.1:2379 with password=%s", url_pw, key)
            log.warning("config", extra={"license_key": extra, "store": {"secret": nested}})
            try:
                raise RuntimeError(f"upstream said Authorization: Bearer {token}")
            except RuntimeError:
                log.exception("request failed")
        entries = loki.wait_for(lambda got: len(got) >= 3, WAIT_S)
        spans = otlp.wait_for(lambda got: any(s["name"] == "work" for s in got), WAIT_S)
        bfm_observe.shutdown()
    outputs = {
        "stderr": stream.getvalue(),
        "loki": json.dumps([(e.line, e.labels, e.metadata) for e in entries]),
        "otlp": json.dumps(spans, default=str),
    }
    for where, text in outputs.items():
        found = [value for value in leaked.values() if value in text]
        assert found == [], f"secrets reached {where}: {found}\n{text[:2000]}"
        assert REDACTED in text, f"nothing was redacted in {where}: the test sent no secret"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert {line["msg"] for line in lines} >= {"config", "request failed"}
    (work,) = [s for s in spans if s["name"] == "work"]
    assert work["attributes"]["db.password"] == REDACTED
    assert work["attributes"]["http.request.header.authorization"] == REDACTED
