"""End to end through the web chat's HTTP API, a real Redis and a real Celery worker."""

from __future__ import annotations

import io

import pytest
import requests
from PIL import Image

from tests.helpers.web_api import imagine, wait_for_job

pytestmark = pytest.mark.usefixtures("clean_redis")


def test_prompt_comes_back_as_paired_png_in_the_same_conversation(
    web_server: str, conversation_id: str
) -> None:
    resp = imagine(web_server, conversation_id, "/imagine a red circle --seed 7 --steps 2")
    assert resp.status_code == 202, resp.text
    job = resp.json()["job"]
    assert job["status"] in ("queued", "running", "done")
    assert job["seed"] == 7 and job["steps"] == 2
    assert job["engines"] == ["dfgan", "diffusion"]

    job = wait_for_job(web_server, job["id"])
    assert job["status"] == "done", job["error"]
    assert job["delivered"] is True
    assert [r["engine"] for r in job["images"]] == ["dfgan", "diffusion"]

    png = requests.get(web_server + job["image_url"], timeout=10)
    assert png.status_code == 200 and png.headers["Content-Type"] == "image/png"
    pair = Image.open(io.BytesIO(png.content))
    singles = [
        Image.open(io.BytesIO(requests.get(web_server + r["urls"][0], timeout=10).content))
        for r in job["images"]
    ]
    assert all(img.size == (64, 64) for img in singles)
    # Two 256-px-high cells side by side plus labels: wider than two cells, taller than one.
    assert pair.width > 2 * 256 and pair.height > 256

    history = requests.get(f"{web_server}/api/conversations/{conversation_id}", timeout=10).json()["messages"]
    assert history[0]["role"] == "user" and history[0]["text"].endswith("--steps 2")
    assert history[1]["role"] == "job" and history[1]["job"]["id"] == job["id"]
    assert history[1]["job"]["image_url"] == job["image_url"]


def test_same_seed_draws_the_same_pictures(web_server: str, conversation_id: str) -> None:
    ids = [imagine(web_server, conversation_id, "a blue square --seed 11 --steps 2").json()["job"]["id"]]
    ids.append(imagine(web_server, conversation_id, "a blue square --seed 11 --steps 2").json()["job"]["id"])
    jobs = [wait_for_job(web_server, i) for i in ids]
    pictures = [
        [requests.get(web_server + r["urls"][0], timeout=10).content for r in job["images"]] for job in jobs
    ]
    assert pictures[0] == pictures[1]


def test_one_engine_and_several_images(web_server: str, conversation_id: str) -> None:
    resp = imagine(web_server, conversation_id, "a green triangle --engine dfgan --n 3 --seed 5")
    job = wait_for_job(web_server, resp.json()["job"]["id"])
    assert job["status"] == "done"
    assert [r["engine"] for r in job["images"]] == ["dfgan"]
    assert len(job["images"][0]["urls"]) == 3
    contents = {requests.get(web_server + u, timeout=10).content for u in job["images"][0]["urls"]}
    assert len(contents) == 3  # seeds 5, 6, 7 draw different pictures


@pytest.mark.parametrize(
    ("text", "code", "fragment"),
    [
        ("", "empty_prompt", "prompt is empty"),
        ("   ", "empty_prompt", "prompt is empty"),
        ("x" * 301, "prompt_too_long", "limit is 300"),
        ("a cat --colour red", "unknown_flag", "Unknown option --colour"),
        ("a cat --steps 0", "steps_out_of_range", "--steps must be between 1 and 100"),
        ("a cat --steps 500", "steps_out_of_range", "--steps must be between 1 and 100"),
        ("a cat --n 9", "count_out_of_range", "--n must be between 1 and 4"),
        ("a cat --seed -1", "seed_out_of_range", "--seed must be between 0 and"),
        ("a cat --seed 99999999999", "seed_out_of_range", "--seed must be between 0 and"),
        ("a cat --size 1000", "size_out_of_range", "--size must be one of 64, 128, 256"),
        ("a cat --engine dalle", "unknown_engine", "'dalle' is not an engine"),
        ("a cat --steps many", "not_a_number", "--steps must be a whole number"),
        ("a cat --seed", "missing_value", "--seed needs a value"),
        ("/retrain dataset:shapes", "not_admin", "Only admins"),
    ],
)
def test_bad_input_gets_a_specific_message_in_the_thread(
    web_server: str, conversation_id: str, text: str, code: str, fragment: str
) -> None:
    resp = imagine(web_server, conversation_id, text)
    assert resp.status_code in (400, 403)
    body = resp.json()
    assert body["code"] == code
    assert fragment in body["error"]
    history = requests.get(f"{web_server}/api/conversations/{conversation_id}", timeout=10).json()["messages"]
    assert history[-1] == {"role": "bot", "text": body["error"], "code": code, "ts": history[-1]["ts"]}
    # Nothing was queued, and the chat keeps working after the mistake.
    ok = imagine(web_server, conversation_id, "a red circle --engine dfgan")
    assert ok.status_code == 202


def test_unknown_job_and_bad_ids_are_404_not_errors(web_server: str) -> None:
    assert requests.get(f"{web_server}/api/jobs/0123456789abcdef", timeout=10).status_code == 404
    assert requests.get(f"{web_server}/api/jobs/..%2F..%2Fetc", timeout=10).status_code == 404
    assert requests.get(f"{web_server}/api/jobs/0123456789abcdef/pair.png", timeout=10).status_code == 404
    resp = requests.post(
        f"{web_server}/api/imagine", json={"conversation_id": "../x", "text": "hi"}, timeout=10
    )
    assert resp.status_code == 400 and resp.json()["code"] == "bad_conversation"
