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
