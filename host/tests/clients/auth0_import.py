#!/usr/bin/env python3
"""Drives `portcullis serve`'s users-imports API with Auth0's own Python SDK
(auth0-python, pinned in requirements.txt beside this file), as someone moving to or
from Auth0 would: creates a job from a file of valid and invalid users, polls it,
reads its errors; then a file that is not JSON, whose job fails.

Usage: auth0_import.py BASE_URL CONNECTION_ID (the API token in AUTH0_TOKEN).
Prints one JSON object of what the SDK returned; exits non-zero, with the reason on
stderr, when an answer is not what Auth0 gives (the SDK cannot parse it, or it says
something else). The Rust test `import::auth0_python_imports_polls_and_reads_errors`
runs it and checks its output too.
"""

import json
import os
import sys
import time

from auth0.management import Auth0

base_url, connection_id = sys.argv[1], sys.argv[2]
client = Auth0(base_url=f"{base_url}/api/v2", token=os.environ["AUTH0_TOKEN"])

GOOD_MD5 = {
    # md5("pw-suffix" + bytes 00 ff 10) in hex, the salt given in hex after the password.
    "algorithm": "md5",
    "hash": {"value": None, "encoding": "hex"},
    "salt": {"value": "00ff10", "encoding": "hex", "position": "suffix"},
}


def md5_suffix():
    import hashlib

    custom = json.loads(json.dumps(GOOD_MD5))
    custom["hash"]["value"] = hashlib.md5(b"pw-suffix" + bytes([0, 0xFF, 0x10])).hexdigest()
    return custom


users = [
    {"email": "sdk-good@example.org", "email_verified": True, "given_name": "Good"},
    {"email": "sdk-md5@example.org", "custom_password_hash": md5_suffix()},
    # Not an address.
    {"email": "not-an-address"},
    # Outside Auth0's schema (additionalProperties: false).
    {"email": "sdk-extra@example.org", "favourite_colour": "green"},
    # bcrypt takes no salt.
    {
        "email": "sdk-bcrypt-salt@example.org",
        "custom_password_hash": {
            "algorithm": "bcrypt",
            "hash": {"value": "$2b$10$nFguVi9LsCAcvTZFKQlRKeLVydo8ETv483lkNsSFI/Wl1Rz1Ypo1K"},
            "salt": {"value": "pepper"},
        },
    },
    # A salt that is not the hex it says it is: refused, not stored as text.
    {
        "email": "sdk-bad-salt@example.org",
        "custom_password_hash": {
            "algorithm": "sha256",
            "hash": {"value": "00" * 32, "encoding": "hex"},
            "salt": {"value": "zz-not-hex", "encoding": "hex"},
        },
    },
    # Not an object at all.
    42,
]


def fail(why, **shown):
    print(json.dumps({"error": why, **shown}, default=str), file=sys.stderr)
    sys.exit(1)


def finished(job_id):
    for _ in range(300):
        job = client.jobs.get(job_id)
        if job.status not in ("pending", "processing"):
            return job
        time.sleep(0.1)
    fail("the job never finished", job=job_id)


created = client.jobs.users_imports.create(
    users=("users.json", json.dumps(users).encode(), "application/json"),
    connection_id=connection_id,
    upsert=False,
    external_id="sdk-mixed",
    send_completion_email=False,
)
# The server may have started the job before it answers: pending or processing.
if created.status not in ("pending", "processing") or created.type != "users_import":
    fail("the created job is not a new users_import", job=created.model_dump())
job = finished(created.id)
errors = client.jobs.errors.get(created.id)
if not isinstance(errors, list):
    fail("the errors of a completed job are not a list", errors=errors)

broken = client.jobs.users_imports.create(
    users=("users.json", b'[{"email": ', "application/json"),
    connection_id=connection_id,
    send_completion_email=False,
)
failed = finished(broken.id)
failed_errors = client.jobs.errors.get(broken.id)
if failed.status != "failed" or not failed.status_details:
    fail("a file that is not JSON did not fail with status_details", job=failed.model_dump())
if isinstance(failed_errors, list) or not failed_errors.status_details:
    fail("the errors of a failed job are not the job with its status_details", errors=failed_errors)

print(
    json.dumps(
        {
            "job": job.model_dump(exclude_none=True),
            "errors": [e.model_dump(exclude_none=True) for e in errors],
            "failed_job": failed.model_dump(exclude_none=True),
            "failed_errors": failed_errors.model_dump(exclude_none=True),
        }
    )
)
