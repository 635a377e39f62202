"""The hosted hf-api engine against a small fake inference endpoint on 127.0.0.1."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from worker.engines.base import GenerationRequest
from worker.engines.hf_api import HFApiEngine, HFApiError


class FakeEndpoint:
    """Answers text-to-image POSTs with a PNG whose colour encodes the seed; scripted failures first."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.headers: list[dict[str, str]] = []
        self.script: list[int] = []  # statuses to answer before succeeding
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fake.requests.append(body)
                fake.headers.append({"Authorization": self.headers.get("Authorization", "")})
                if fake.script:
                    status = fake.script.pop(0)
                    payload = json.dumps({"error": "Model is loading", "estimated_time": 0.1}).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    if status == 429:
                        self.send_header("Retry-After", "0.2")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                seed = body.get("parameters", {}).get("seed", 0)
                buf = io.BytesIO()
                Image.new("RGB", (32, 32), (seed % 256, 0, 0)).save(buf, format="PNG")
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(buf.getvalue())))
                self.end_headers()
                self.wfile.write(buf.getvalue())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/models/fake"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def endpoint() -> Iterator[FakeEndpoint]:
    fake = FakeEndpoint()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def _engine(url: str, token: str | None = "hf_test") -> HFApiEngine:
    return HFApiEngine("org/model", token, base_url=url, timeout_s=10, backoff_s=0.05)


def test_one_call_per_seed_with_prompt_seed_and_token(endpoint: FakeEndpoint) -> None:
    engine = _engine(endpoint.url)
    images = engine.generate(
        [GenerationRequest("a red circle", [3, 4], steps=5, size=64, negative_prompt="blur")]
    )
    assert [img.getpixel((0, 0)) for img in images[0]] == [(3, 0, 0), (4, 0, 0)]
    first = endpoint.requests[0]
    assert first["inputs"] == "a red circle"
    assert first["parameters"]["seed"] == 3 and first["parameters"]["negative_prompt"] == "blur"
    assert endpoint.headers[0]["Authorization"] == "Bearer hf_test"
    assert engine.info.name == "hf-api" and engine.info.version == "org/model"


def test_model_loading_and_rate_limit_are_retried(endpoint: FakeEndpoint) -> None:
    endpoint.script = [503, 429]
    images = _engine(endpoint.url).generate([GenerationRequest("x", [9])])
    assert images[0][0].getpixel((0, 0)) == (9, 0, 0)
    assert len(endpoint.requests) == 3


def test_rejected_token_and_missing_token_say_what_to_do(endpoint: FakeEndpoint) -> None:
    endpoint.script = [401]
    with pytest.raises(HFApiError, match="rejected the token.*IMAGINEBOT_HF_API_TOKEN"):
        _engine(endpoint.url).generate([GenerationRequest("x", [1])])
    with pytest.raises(HFApiError, match="set IMAGINEBOT_HF_API_TOKEN"):
        _engine(endpoint.url, token=None)


def test_gives_up_after_repeated_loading(endpoint: FakeEndpoint) -> None:
    endpoint.script = [503] * 10
    with pytest.raises(HFApiError, match="HTTP 503"):
        _engine(endpoint.url).generate([GenerationRequest("x", [1])])
    assert len(endpoint.requests) == 4
