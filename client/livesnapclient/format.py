"""How the commands show values: sizes, cells, steps, disks, trees.

Values are wrapped in cliff :class:`~cliff.columns.FormattableColumn`
classes: the ``table``, ``value`` and ``csv`` formats show their human form
(``-`` for nothing, ``1.5 GiB``), ``json`` and ``yaml`` the API's value.
"""

import json

from cliff import columns


def human_size(size):
    """Format a size in bytes with binary units (``1.5 GiB``); ``-`` if None.
    """
    if size is None:
        return "-"
    size = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            break
        size /= 1024
    if unit == "B":
        return "%d B" % size
    return "%.1f %s" % (size, unit)


def cell(value):
    """Render one value for a table cell."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return ("%.2f" % value).rstrip("0").rstrip(".")
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


class Cell(columns.FormattableColumn):
    """Any API value: ``-`` for None, ``yes``/``no``, short floats."""

    def human_readable(self):
        return cell(self._value)


class Size(columns.FormattableColumn):
    """A size in bytes, as ``1.0 MiB``."""

    def human_readable(self):
        return human_size(self._value)


class SizeDetail(columns.FormattableColumn):
    """A size in bytes, as ``1048576 (1.0 MiB)``."""

    def human_readable(self):
        if self._value is None:
            return "-"
        return "%s (%s)" % (self._value, human_size(self._value))


class Current(columns.FormattableColumn):
    """Whether the live image sits on this snapshot: ``*`` or nothing."""

    def human_readable(self):
        return "*" if self._value else ""


class Names(columns.FormattableColumn):
    """A list of objects shown by name (``vda, vdb``); the names in JSON."""

    def human_readable(self):
        return ", ".join(self.machine_readable())

    def machine_readable(self):
        return [d.get("name", "?") if isinstance(d, dict) else str(d)
                for d in self._value or []]


class Disks(columns.FormattableColumn):
    """The disks of a server, one line each.

    The active image is shown when the API gives it (admins only).
    """

    def human_readable(self):
        lines = []
        for disk in self._value or []:
            text = "%s: snapshot %s, busy %s" % (
                disk.get("name"), cell(disk.get("snapshot_id")),
                cell(disk.get("busy")))
            if "active_image" in disk:
                text += ", active image %s" % cell(disk.get("active_image"))
            lines.append(text)
        return "\n".join(lines) or "-"


def steps_text(steps):
    """The steps of an operation, one aligned line each."""
    steps = steps or []
    if not steps:
        return "-"
    width = max(len(str(s.get("name"))) for s in steps)
    return "\n".join(
        "%s  %s  %s ms" % (str(s.get("name")).ljust(width),
                           cell(s.get("status")), cell(s.get("duration_ms")))
        for s in steps)


class Steps(columns.FormattableColumn):
    """The steps of an operation with their durations."""

    def human_readable(self):
        return steps_text(self._value)


class Operation(columns.FormattableColumn):
    """An operation inside another object's view (``snapshot create``):
    its id and status, and its mode, pause and steps once known.
    """

    def human_readable(self):
        op = self._value or {}
        text = "%s (%s)" % (op.get("id"), op.get("status"))
        if op.get("status") in ("succeeded", "failed"):
            text += "\nmode: %s" % cell(op.get("mode"))
            if op.get("pause_ms") is not None:
                text += "\nguest I/O paused for %s ms" % cell(
                    float(op["pause_ms"]))
            if op.get("error"):
                text += "\nerror: %s" % op["error"]
            if op.get("steps"):
                text += "\n" + steps_text(op["steps"])
        return text


def show(obj, fields, formatters=None, optional=()):
    """The ``(columns, values)`` of one object for a ``ShowOne``.

    :param fields: field names, in order.
    :param formatters: field name -> FormattableColumn class (default Cell).
    :param optional: fields shown only when the object has them (host
        details, which the API shows to admins only).
    """
    formatters = formatters or {}
    names = tuple(f for f in fields if f not in optional or f in obj)
    return names, tuple(formatters.get(f, Cell)(obj.get(f)) for f in names)


def rows(objs, fields, formatters=None):
    """The rows of a ``Lister``: ``fields`` of each object, formatted."""
    formatters = formatters or {}
    return [tuple(formatters.get(f, Cell)(o.get(f)) for f in fields)
            for o in objs]


# ------------------------------------------------------------- tree drawing

UNICODE_TREE = ("├── ", "└── ", "│   ", "    ")
ASCII_TREE = ("+- ", "`- ", "|  ", "   ")


def tree_glyphs(stream, ascii_only):
    """Box-drawing glyphs when the stream can encode them, else ASCII."""
    if ascii_only:
        return ASCII_TREE
    try:
        "".join(UNICODE_TREE).encode(getattr(stream, "encoding", None)
                                     or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ASCII_TREE
    return UNICODE_TREE


def _node_label(snap):
    """One tree node: name, short id, status (or ``(deleted)``), size."""
    if snap.get("status") == "deleted":
        state = "(deleted)"
    else:
        state = snap.get("status") or "?"
    label = "%s [%s] %s %s" % (snap.get("name"), str(snap.get("id"))[:8],
                               state, human_size(snap.get("size_bytes")))
    if snap.get("current"):
        label += "  <- current"
    return label


def creation_order(snap):
    """Sort key of snapshots: creation time, then name and id."""
    return (snap.get("created_at") or "", snap.get("name") or "",
            str(snap.get("id")))


def draw_tree(snapshots, glyphs=UNICODE_TREE):
    """Draw the snapshot trees of a server, one tree per disk.

    A node whose parent is not in ``snapshots`` is a root; siblings are in
    creation order. The node the live image sits on is marked
    ``<- current``.

    :param snapshots: snapshot objects as the API returns them.
    :param glyphs: (branch, last branch, continuation, blank) prefixes.
    :returns: the drawing as a list of lines.
    """
    branch, last_branch, cont, blank = glyphs
    by_disk = {}
    for snap in snapshots:
        by_disk.setdefault(snap.get("disk") or "?", []).append(snap)

    lines = []
    for disk in sorted(by_disk):
        nodes = sorted(by_disk[disk], key=creation_order)
        ids = {s["id"] for s in nodes}
        children = {}
        roots = []
        for snap in nodes:
            parent = snap.get("parent_id")
            if parent in ids and parent != snap["id"]:
                children.setdefault(parent, []).append(snap)
            else:
                roots.append(snap)
        seen = set()

        def walk(snap, prefix, connector, child_prefix):
            seen.add(snap["id"])
            lines.append(prefix + connector + _node_label(snap))
            kids = [k for k in children.get(snap["id"], ())
                    if k["id"] not in seen]
            for i, kid in enumerate(kids):
                last = i == len(kids) - 1
                walk(kid, prefix + child_prefix,
                     last_branch if last else branch,
                     blank if last else cont)

        if lines:
            lines.append("")
        lines.append("Disk %s:" % disk)
        for root in roots:
            walk(root, "", "", "")
        # A parent cycle leaves nodes unreachable: show them rather than hide.
        for snap in nodes:
            if snap["id"] not in seen:
                walk(snap, "", "", "")
    return lines
