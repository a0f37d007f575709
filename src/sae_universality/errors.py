"""The one exception type for mistakes a user can fix.

Every error a user can cause (config, paths, model ids, layer numbers, file
formats, damaged files) is raised as `UserError` with a one-line message that
names the thing and the fix; entry points print that line and exit without a
traceback.

Misuse of the Python API (wrong shapes, NaN arrays, out-of-range indices, bad
option values passed to a function) is not the user's to fix from the config:
it raises `ValueError` or `TypeError`, and the job's log shows the traceback of
the bug. A stage function checks what the user controls before it calls the math.
"""


class UserError(Exception):
    """A mistake in input the user controls; str(error) is one line naming the fix."""
