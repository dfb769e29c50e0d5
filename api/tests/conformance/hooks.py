"""Schemathesis hooks for the api's conformance runs.

`never_a_500`: with Redis down, `not_a_server_error` cannot run (a queue
operation then answers its documented 503), but a 500, a fault of the
api's own, is still a failure in both runs.
"""

import schemathesis


@schemathesis.check
def never_a_500(ctx, response, case):
    """No answer is a 500 Internal Server Error."""
    if response.status_code == 500:
        raise AssertionError(
            "500 Internal Server Error: a fault of the api's own; "
            "its logs hold the cause under the answer's trace id"
        )


@schemathesis.hook
def filter_body(ctx, body):
    """Drops bodies with a `run_at` (of the job, or of a batch's job) past
    the api's `MAX_DELAY_SECS` (30 days) from now: a bound relative to the
    clock, which a schema cannot state. The api refuses those with a 422,
    as its unit tests check."""
    if not isinstance(body, dict):
        return True
    jobs = body.get("jobs") if isinstance(body.get("jobs"), list) else [body]
    return all(_within_the_horizon(job) for job in jobs)


def _within_the_horizon(job):
    import datetime

    if not isinstance(job, dict) or not isinstance(job.get("run_at"), str):
        return True
    try:
        at = datetime.datetime.fromisoformat(job["run_at"].replace("Z", "+00:00"))
    except ValueError:
        return True
    if at.tzinfo is None:
        return True
    horizon = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=29)
    return at <= horizon


@schemathesis.hook
def map_case(ctx, case):
    """Gives every generated request a fresh valid `Idempotency-Key`: the
    api refuses a key reused for a different body (a `422` that depends on
    what was sent before, not on the request), and tests of repeats live
    in api/tests/http.rs. Invalid keys stay as generated."""
    import re
    import uuid

    key = (case.headers or {}).get("Idempotency-Key")
    if isinstance(key, str) and re.fullmatch(r"[!-~]{1,255}", key):
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    return case
