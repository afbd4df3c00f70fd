"""A REST client of the livesnap API (``/v1``) on keystoneauth1.

The client sends its requests through a keystoneauth1
:class:`~keystoneauth1.adapter.Adapter`, so the same class serves every way
of authenticating: a keystone session whose service catalog names the
endpoint (service type :data:`SERVICE_TYPE`), as python-openstackclient
builds it, or a fixed endpoint with a static ``X-Auth-Token``, as the
``livesnap`` command does with ``--url``/``--token``.
"""

import urllib.parse
import uuid

from keystoneauth1 import adapter
from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session
from keystoneauth1 import token_endpoint

from livesnapclient import exceptions

#: The service type of livesnap in the keystone service catalog.
SERVICE_TYPE = "livesnap"
#: The API microversion this client was written for (it follows the
#: lists' ``next`` links of 1.1), sent in every request as
#: ``OpenStack-API-Version: livesnap 1.1``: a newer API answers it as 1.1
#: did, an older one refuses it (406) instead of answering otherwise.
API_VERSION = "1.1"
#: Socket timeout of a single HTTP request, in seconds.
REQUEST_TIMEOUT = 30.0
#: A request whose answer was lost (no connection, a reset or timed-out
#: connection, or 502/503/504 from the API or a proxy) is sent again this
#: many times, RETRY_DELAY seconds apart, by keystoneauth1's own retries.
#: A POST or DELETE carries the same ``Idempotency-Key`` each time, so the
#: API answers a repeat of a request it already ran with its first answer
#: and never runs it twice.
RETRIES = 3
RETRY_DELAY = 1.0
RETRIABLE_STATUS_CODES = [502, 503, 504]
#: The methods that get an ``Idempotency-Key``.
IDEMPOTENT_METHODS = ("POST", "DELETE")


def fixed_endpoint_session(url, token=None, timeout=REQUEST_TIMEOUT):
    """A session that sends every request to ``url`` without keystone.

    :param url: base URL of the API (with or without ``/v1``).
    :param token: value of the ``X-Auth-Token`` header, or None to send none.
    :param timeout: socket timeout of each request, in seconds.
    :returns: a :class:`keystoneauth1.session.Session`.
    """
    auth = token_endpoint.Token(url, token) if token else None
    return ks_session.Session(auth=auth, timeout=timeout)


class Client:
    """The livesnap REST API, one method per resource call.

    :param session: a keystoneauth1 session (keystone or fixed endpoint).
    :param endpoint_override: base URL of the API; None to look it up in
        the service catalog.
    :param interface: catalog interface (``public``, ``internal``, ``admin``).
    :param region_name: catalog region, or None.
    :param service_type: catalog service type.
    :param api_version: the microversion asked for in every request
        (``OpenStack-API-Version``, by keystoneauth1).
    """

    def __init__(self, session, endpoint_override=None, interface=None,
                 region_name=None, service_type=SERVICE_TYPE,
                 api_version=API_VERSION):
        self.adapter = adapter.Adapter(
            session, service_type=service_type, interface=interface,
            region_name=region_name, endpoint_override=endpoint_override,
            default_microversion=api_version,
            connect_retries=RETRIES, connect_retry_delay=RETRY_DELAY,
            status_code_retries=RETRIES,
            status_code_retry_delay=RETRY_DELAY,
            retriable_status_codes=RETRIABLE_STATUS_CODES)
        self._base_url = None

    @property
    def base_url(self):
        """The API's root URL, from the override or the catalog.

        A catalog entry may name the root or ``/v1``; both work.

        :raises ClientError: when the catalog has no livesnap endpoint.
        """
        if self._base_url is None:
            try:
                url = self.adapter.get_endpoint()
            except ks_exc.EndpointNotFound:
                url = None
            except ks_exc.ConnectionError as exc:
                raise exceptions.ConnectionFailed(
                    "Error: cannot connect to the identity service: %s"
                    % exc) from None
            except ks_exc.ClientException as exc:
                raise exceptions.ClientError(
                    "Error: authentication failed: %s" % exc) from None
            if not url:
                raise exceptions.ClientError(
                    "Error: no endpoint of service type %r in the service "
                    "catalog (region %s, interface %s); register one or "
                    "give the URL" % (self.adapter.service_type,
                                      self.adapter.region_name or "any",
                                      self.adapter.interface or "public"))
            url = url.rstrip("/")
            if url.endswith("/v1"):
                url = url[:-len("/v1")]
            self._base_url = url
        return self._base_url

    def request(self, method, path, body=None, query=None,
                idempotency_key=None):
        """Send one request and return the decoded JSON answer.

        A POST or DELETE carries an ``Idempotency-Key`` (a fresh UUID
        unless given), the same in each of its retries (:data:`RETRIES`).

        :param method: HTTP method.
        :param path: path below ``/v1``, e.g. ``/servers``.
        :param body: object to send as JSON, or None.
        :param query: dict of query parameters, or None.
        :param idempotency_key: the key of a POST or DELETE, to repeat a
            request of an earlier run; None for a new one.
        :returns: the decoded JSON body, or None for an empty body.
        :raises ApiError: on a 4xx/5xx answer, with the API's error code.
        :raises ConnectionFailed: when the API cannot be reached.
        :raises ClientError: on an authentication failure or a body that is
            not JSON.
        """
        base = self.base_url
        kwargs = {"headers": {"Accept": "application/json"},
                  "raise_exc": False}
        if method in IDEMPOTENT_METHODS:
            kwargs["headers"]["Idempotency-Key"] = (
                idempotency_key or str(uuid.uuid4()))
        if body is not None:
            kwargs["json"] = body
        if query:
            kwargs["params"] = query
        try:
            resp = self.adapter.request(base + "/v1" + path, method,
                                        **kwargs)
        except ks_exc.ConnectionError as exc:
            raise exceptions.ConnectionFailed(
                "Error: cannot connect to the livesnap API at %s: %s"
                % (base, _reason(exc))) from None
        except ks_exc.ClientException as exc:
            raise exceptions.ClientError(
                "Error: authentication failed: %s" % exc) from None
        if resp.status_code >= 400:
            raise _api_error(resp)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise exceptions.ClientError(
                "Error: the API answered %s %s with a body that is not JSON"
                % (method, path)) from None

    def list_all(self, path, key, query=None):
        """Every item of a list, following its ``next`` links.

        The API answers at most a page (``[api] default_page_size``) and a
        ``<key>_links`` ``next`` link when there may be more; the link's
        query string (its ``marker``) is sent again on ``path``, so a proxy
        that rewrites the host does not matter.

        :raises ApiError, ConnectionFailed, ClientError: as :meth:`request`.
        """
        items = []
        while True:
            resp = self.request("GET", path, query=query)
            items += resp[key]
            nexts = [link["href"] for link in resp.get(key + "_links", [])
                     if link.get("rel") == "next"]
            if not nexts or not resp[key]:
                return items
            query = dict(urllib.parse.parse_qsl(
                urllib.parse.urlsplit(nexts[0]).query))

    # Thin wrappers, one per REST resource call.

    def list_servers(self):
        return self.list_all("/servers", "servers")

    def list_hosts(self):
        return self.list_all("/hosts", "hosts")

    def get_server(self, server_id):
        return self.request("GET", "/servers/%s" % _q(server_id))["server"]

    def create_server(self, server):
        return self.request("POST", "/servers", {"server": server})["server"]

    def delete_server(self, server_id, keep_snapshots=False, force=False):
        """Unregister a server.

        :returns: the answer: ``{"server", "operation"}`` while its
            snapshots are deleted (202), or ``{"server"}`` with the
            ``files_left`` when only the records went.
        """
        query = {}
        if keep_snapshots:
            query["keep_snapshots"] = "true"
        if force:
            query["force"] = "true"
        return self.request("DELETE", "/servers/%s" % _q(server_id),
                            query=query or None)

    def create_snapshot(self, server_id, disk, name, quiesce=None):
        """:param quiesce: ``required``, ``preferred`` or ``off``; None
            leaves the server's default (``preferred`` with a guest agent).
        :returns: the ``(snapshot, operation)`` pair of the answer.
        """
        spec = {"name": name, "disk": disk}
        if quiesce:
            spec["quiesce"] = quiesce
        resp = self.request("POST", "/servers/%s/snapshots" % _q(server_id),
                            {"snapshot": spec})
        return resp["snapshot"], resp["operation"]

    def list_snapshots(self, server_id, include_deleted=False):
        query = {"include_deleted": "true"} if include_deleted else None
        return self.list_all("/servers/%s/snapshots" % _q(server_id),
                             "snapshots", query)

    def get_snapshot(self, snapshot_id):
        return self.request("GET",
                            "/snapshots/%s" % _q(snapshot_id))["snapshot"]

    def delete_snapshot(self, snapshot_id):
        return self.request("DELETE",
                            "/snapshots/%s" % _q(snapshot_id))["operation"]

    def revert_snapshot(self, snapshot_id):
        return self.request("POST", "/snapshots/%s/revert"
                            % _q(snapshot_id))["operation"]

    def create_snapshot_group(self, server_id, name, disks=None,
                              quiesce=None):
        """:param quiesce: as for :meth:`create_snapshot`, for the group.
        :returns: the ``(snapshot_group, operation)`` pair.
        """
        spec = {"name": name}
        if disks:
            spec["disks"] = list(disks)
        if quiesce:
            spec["quiesce"] = quiesce
        resp = self.request("POST", "/servers/%s/snapshot-groups"
                            % _q(server_id), {"snapshot_group": spec})
        return resp["snapshot_group"], resp["operation"]

    def list_snapshot_groups(self, server_id):
        return self.list_all("/servers/%s/snapshot-groups" % _q(server_id),
                             "snapshot_groups")

    def get_snapshot_group(self, group_id):
        return self.request("GET", "/snapshot-groups/%s"
                            % _q(group_id))["snapshot_group"]

    def delete_snapshot_group(self, group_id):
        return self.request("DELETE", "/snapshot-groups/%s"
                            % _q(group_id))["operations"]

    def revert_snapshot_group(self, group_id):
        return self.request("POST", "/snapshot-groups/%s/revert"
                            % _q(group_id))["operations"]

    def clone_snapshot(self, snapshot_id, mode, disk, server_id=None,
                       name=None):
        spec = {"mode": mode, "disk": disk}
        if server_id:
            spec["server_id"] = server_id
        if name:
            spec["name"] = name
        return self.request("POST", "/snapshots/%s/clone" % _q(snapshot_id),
                            {"clone": spec})["operation"]

    def protect_snapshot(self, snapshot_id, protected=True):
        return self.request("PATCH", "/snapshots/%s" % _q(snapshot_id),
                            {"snapshot": {"protected": protected}}
                            )["snapshot"]

    def list_policies(self, server_id=None):
        query = {"server_id": server_id} if server_id else None
        return self.list_all("/policies", "policies", query)

    def get_policy(self, policy_id):
        return self.request("GET", "/policies/%s" % _q(policy_id))["policy"]

    def create_policy(self, policy):
        return self.request("POST", "/policies", {"policy": policy})["policy"]

    def update_policy(self, policy_id, changes):
        return self.request("PATCH", "/policies/%s" % _q(policy_id),
                            {"policy": changes})["policy"]

    def delete_policy(self, policy_id):
        return self.request("DELETE",
                            "/policies/%s" % _q(policy_id))["policy"]

    def list_policy_runs(self, policy_id):
        return self.list_all("/policies/%s/runs" % _q(policy_id), "runs")

    def get_operation(self, operation_id):
        return self.request("GET",
                            "/operations/%s" % _q(operation_id))["operation"]

    def cancel_operation(self, operation_id):
        return self.request("POST", "/operations/%s/cancel"
                            % _q(operation_id))["operation"]

    def list_operations(self, server_id=None):
        query = {"server_id": server_id} if server_id else None
        return self.list_all("/operations", "operations", query)


def _q(value):
    """Quote one path segment."""
    return urllib.parse.quote(str(value), safe="")


def _reason(exc):
    """The system's reason for a connection failure (``[Errno 111]
    Connection refused``) rather than the layers of wrappers around it.
    """
    seen = set()
    cause = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.strerror:
            return str(cause)
        cause = cause.__cause__ or cause.__context__
    return str(exc)


def _api_error(resp):
    """Build an :class:`ApiError` from an error response.

    Uses the ``{"error": {"code", "message"}}`` body when there is one, and
    falls back to the HTTP reason and the raw body (a proxy's HTML page, say).
    """
    raw = resp.text or ""
    code = resp.reason or "error"
    message = raw.strip() or str(resp.reason)
    try:
        err = resp.json()["error"]
        code = err.get("code", code)
        message = err.get("message", message)
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return exceptions.ApiError(
        resp.status_code, code, message,
        request_id=resp.headers.get("x-openstack-request-id"))
