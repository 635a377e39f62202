"""Driving the web chat's JSON API from tests."""

from __future__ import annotations

import time

import requests
from flask.testing import FlaskClient

from core.settings import Settings


def imagine(base_url: str, conversation_id: str, text: str) -> requests.Response:
    """POST a prompt to the web chat's API."""
    return requests.post(
        f"{base_url}/api/imagine", json={"conversation_id": conversation_id, "text": text}, timeout=10
    )


def wait_for_job(base_url: str, job_id: str, timeout_s: float = 120.0, delivered: bool = True) -> dict:
    """Poll the job until it is finished (and delivered); returns its JSON view."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        job = requests.get(f"{base_url}/api/jobs/{job_id}", timeout=10).json()["job"]
        if job["status"] in ("done", "failed", "cancelled") and (job["delivered"] or not delivered):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} not finished within {timeout_s} s: {job}")


#: The passwords of :func:`beyond_localhost`.
ACCESS_PASSWORD = "open sesame"
ADMIN_PASSWORD = "correct horse"


def beyond_localhost(settings: Settings, admin_cid: str) -> FlaskClient:
    """A test client of the web chat listening beyond localhost (access and admin passwords set,
    ``admin_cid`` an admin's conversation), already signed in."""
    from bots.web.app import create_app

    open_settings = settings.model_copy(
        update={
            "web_host": "0.0.0.0",
            "web_admin_password": ADMIN_PASSWORD,
            "admin_ids": f"web:{admin_cid}",
            "web_access_password": ACCESS_PASSWORD,
        }
    )
    client = create_app(open_settings).test_client()
    assert client.post("/login", data={"password": ACCESS_PASSWORD}).status_code == 303
    return client
