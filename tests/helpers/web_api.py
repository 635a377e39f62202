"""Driving the web chat's JSON API from tests."""

from __future__ import annotations

import time

import requests


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
