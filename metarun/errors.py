"""The one exception type that means "the user gave us something wrong".

The CLI turns it into a single line on stderr and exit code 2; everything
else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: a key, value or path the user can fix. Message is one line."""
