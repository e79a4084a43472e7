"""Output directories that are built beside their path and renamed in."""

import os
import secrets


def new_directory(parent, prefix):
    """Creates a new, uniquely named directory in `parent`; returns its path.

    Unlike `tempfile.mkdtemp`, whose directories are private (0700), it gets
    the permissions `os.mkdir` gives under the umask: it is built to become
    the user's output directory by a rename.
    """
    while True:
        path = os.path.join(parent, prefix + secrets.token_hex(8))
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
