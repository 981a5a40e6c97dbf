"""Schemathesis hooks for deploy/checks/schemathesis.sh.

A long poll (`GET /v1/poll`) waits up to `timeout` seconds (default 30) for an event that a
generated test never publishes; a short wait keeps the run about requests, not idle time.
Values that are not numbers are left alone, so their refusal is still tested.
"""

import schemathesis


@schemathesis.hook
def map_query(ctx, query):
    if ctx.operation.path == "/v1/poll" and isinstance(query, dict):
        wait = query.get("timeout")
        if wait is None or (isinstance(wait, (int, float)) and not isinstance(wait, bool) and wait > 1):
            query["timeout"] = 0.2
    return query
