"""Output directories that are built beside their path and renamed in."""

import os
import secrets
import shutil
import tempfile


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


def replace_directory(building, path):
    """Moves the directory `building` to `path`.

    An existing `path` (but for an empty directory, which the rename
    replaces) is removed only once the new one is in, so a failed move
    leaves it as it was.
    """
    if not os.path.exists(path) or not os.listdir(path):
        os.replace(building, path)
        return
    old = tempfile.mkdtemp(dir=os.path.dirname(path), prefix=".replaced-")
    os.rmdir(old)
    os.replace(path, old)
    try:
        os.replace(building, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old, ignore_errors=True)
