"""A rule OpenAPI cannot state, taught to schemathesis's generator.

A `GET /todo` cursor names the column it came from, and a request whose `status` names another
column is refused (400, as the document says). JSON Schema has no way to tie one query parameter
to another, so a generated request may pair a valid cursor with another valid status, which is
bad input rather than "schema-valid data refused". This hook makes such a pair consistent by
giving the cursor the request's column; every other generated value, valid or not, is sent as
generated.
"""

import re

import schemathesis

COLUMNS = ("TODO", "PROGRESS", "DONE")
CURSOR = re.compile(r"(TODO|PROGRESS|DONE)(\.(0|[1-9][0-9]{0,17})\.[1-9][0-9]{0,17})")


@schemathesis.hook("map_case")
def cursor_in_the_requested_column(context, case):
    if case.operation.label != "GET /todo" or not isinstance(case.query, dict):
        return case
    status, cursor = case.query.get("status"), case.query.get("cursor")
    if status in COLUMNS and isinstance(cursor, str):
        match = CURSOR.fullmatch(cursor)
        if match and match.group(1) != status:
            case.query["cursor"] = status + match.group(2)
    return case
