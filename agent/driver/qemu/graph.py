"""QEMU's block graph as the QEMU driver sees it.

``Graph`` is the qcow2 nodes of one QEMU looked up by image file (from
``query-named-block-nodes``); the functions give the stable node names and
block-job ids the driver uses, so that a task run again after a crash
finds the node or the job an earlier attempt made.
"""

import hashlib
import json
import os
import re

from agent.driver.fileimage import same

#: job states after which a job runs no more
JOB_DONE = ("concluded", "null")


def node_name_for(path):
    """A stable QEMU node name for image ``path`` (at most 31 characters)."""
    base = re.sub(r"[^A-Za-z0-9_-]", "-", os.path.basename(path))[:20]
    digest = hashlib.sha1(os.path.realpath(path).encode()).hexdigest()[:6]
    return "ls-%s-%s" % (base, digest)


def job_id_for(path):
    """A stable block-job id for merging into image ``path``."""
    digest = hashlib.sha1(os.path.realpath(path).encode()).hexdigest()[:12]
    return "ls-merge-%s" % digest


def commit_job_id_for(path):
    """A stable block-job id for committing image ``path`` into its
    backing file (the cheaper direction of a merge).
    """
    digest = hashlib.sha1(os.path.realpath(path).encode()).hexdigest()[:12]
    return "ls-commit-%s" % digest


def top_node_name_for(snap):
    """The node name of the live layer a create of snapshot ``snap`` puts
    on top (its file is the disk's path, the same for every create).
    """
    digest = hashlib.sha1(os.path.realpath(snap).encode()).hexdigest()[:12]
    return "ls-top-%s" % digest


def file_node_name_for(node_name, path, prefix="ls-f-"):
    """A stable name for a file node of qcow2 node ``node_name`` on
    ``path`` (``prefix`` ``ls-x-`` for the locking-off hop).
    """
    key = "%s\0%s" % (node_name, os.path.realpath(path))
    return prefix + hashlib.sha1(key.encode()).hexdigest()[:12]


class Edges(object):
    """The parent/child links of a QEMU's block nodes
    (``x-debug-query-block-graph``; ``query-named-block-nodes`` has none in
    QEMU 7.2).
    """

    def __init__(self, session):
        graph = session.execute("x-debug-query-block-graph") or {}
        names = dict((n["id"], n.get("name"))
                     for n in graph.get("nodes", [])
                     if n.get("type") == "block-driver")
        self.names = set(names.values())
        self.children = {}
        self.backed = set()
        for e in graph.get("edges", []):
            parent = names.get(e.get("parent"))
            child = names.get(e.get("child"))
            if parent is None or child is None:
                continue
            self.children[(parent, e.get("name"))] = child
            if e.get("name") == "backing":
                self.backed.add(child)

    def child(self, node_name, edge):
        """``node_name``'s child on ``edge`` (``file``/``backing``)."""
        return self.children.get((node_name, edge))

    def is_top(self, node_name):
        """No node has ``node_name`` as its backing."""
        return node_name not in self.backed


def child_name(session, node_name, edge):
    """The node name of ``node_name``'s child on edge ``edge`` (``file`` or
    ``backing``), or None.
    """
    return Edges(session).child(node_name, edge)


class Graph(object):
    """The qcow2 nodes of a QEMU, looked up by image file."""

    def __init__(self, session):
        # QEMU 7.2 crashes (SIGSEGV) answering query-named-block-nodes while
        # a finalized stream job waits to be dismissed, which is what an
        # agent killed inside a merge's pause leaves behind (the finalize
        # was queued in the same write as stop and cont).  Its outcome
        # shows in the graph, so dismiss such a job of ours first.
        for job in session.jobs():
            if (job.get("id", "").startswith("ls-merge-")
                    and job.get("status") in JOB_DONE):
                session.execute("job-dismiss", {"id": job["id"]})
        self.nodes = [n for n in session.named_nodes()
                      if n.get("drv") == "qcow2"]

    @staticmethod
    def filename(node):
        """The image file of ``node``.  QEMU names a node opened with
        ``"backing": null`` (a new layer not yet pivoted to) by its options
        as ``json:{...}``; the file is inside.
        """
        name = node.get("file")
        if isinstance(name, str) and name.startswith("json:"):
            try:
                return json.loads(name[5:])["file"]["filename"]
            except (ValueError, KeyError, TypeError):
                return None
        return name

    def node(self, path):
        """The qcow2 node whose image file is ``path``, or None."""
        for n in self.nodes:
            if same(self.filename(n), path):
                return n
        return None

    @staticmethod
    def backing(node):
        """Real path of ``node``'s backing file, or None."""
        name = node.get("backing_file")
        if not name:
            return None
        if name.startswith("json:"):
            # a backing node opened with options of the agent's (a file
            # node of its own) is named by them
            name = Graph.filename({"file": name})
            if not name:
                return None
        if not os.path.isabs(name):
            name = os.path.join(os.path.dirname(Graph.filename(node)), name)
        return os.path.realpath(name)

    def is_top(self, node):
        """True if no other node has ``node``'s image as its backing."""
        return not any(same(self.backing(n), self.filename(node))
                       for n in self.nodes if n is not node)
