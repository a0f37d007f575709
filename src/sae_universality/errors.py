"""The one exception type for mistakes a user can fix.

Every error a user can cause (config, paths, model ids, layer numbers, file
formats) is raised as `UserError` with a one-line message that names the thing
and the fix; entry points print that line and exit without a traceback.
"""


class UserError(Exception):
    """A mistake in input the user controls; str(error) is one line naming the fix."""
