"""Confine every path the agent touches to its configured image directories.

The conductor sends image paths in RPC tasks.  A bug or a forged message must
never make the agent create, rebase or delete a file elsewhere on the host, so
each path is checked here before any I/O: it must be an absolute path with no
``..`` component whose real location (symlinks resolved) lies inside one of
the image directories.
"""

import os

from agent import exception


def _real_dirs(image_dirs):
    if isinstance(image_dirs, str):
        image_dirs = [image_dirs]
    dirs = []
    for d in image_dirs or ():
        if not isinstance(d, str) or not d or "\0" in d:
            continue
        dirs.append(os.path.realpath(d))
    return dirs


def confine(path, image_dirs):
    """Return the real path of ``path`` if it lies inside ``image_dirs``.

    A file that does not exist yet is accepted when its real location (its
    parent directory resolved) is inside an image directory.  An image
    directory itself is not a valid image path.

    :param path: absolute path of an image file.
    :param image_dirs: list of directories the agent may touch.
    :returns: the resolved path (str).
    :raises PathNotAllowed: for anything else.
    """
    if not isinstance(path, str):
        raise exception.PathNotAllowed(
            "Image path must be a string, not %s" % type(path).__name__)
    if not path or "\0" in path:
        raise exception.PathNotAllowed("Image path is empty or contains NUL")
    if not os.path.isabs(path):
        raise exception.PathNotAllowed(
            "Image path %r is not absolute" % path)
    if ".." in path.split(os.sep):
        raise exception.PathNotAllowed(
            "Image path %r contains a '..' component" % path)
    if path.endswith(os.sep):
        raise exception.PathNotAllowed(
            "Image path %r names a directory" % path)
    dirs = _real_dirs(image_dirs)
    if not dirs:
        raise exception.PathNotAllowed(
            "No image directories are configured; refusing %r" % path)
    # realpath() in non-strict mode resolves the existing prefix (parent
    # directories and any symlink, dangling or not) and keeps the rest.
    real = os.path.realpath(path)
    for d in dirs:
        if real != d and os.path.commonpath([real, d]) == d:
            return real
    raise exception.PathNotAllowed(
        "Image path %r (real path %r) is outside the image directories %s"
        % (path, real, ", ".join(dirs)))
