"""The Salesforce sandbox server: REST API, sObject Collections, Bulk API 2.0, logins.

Routes (``vXX.X`` = any version between ``min_api_version`` and ``max_api_version``)::

    GET    /services/data/                                   versions          (not counted)
    GET    /services/data/vXX.X/                             resources
    GET    /services/data/vXX.X/limits                       limits
    GET    /services/data/vXX.X/query?q=  | queryAll?q=      query / queryAll
    GET    /services/data/vXX.X/query/<locator>-<offset>     queryMore
    GET    /services/data/vXX.X/sobjects                     describeGlobal
    GET    /services/data/vXX.X/sobjects/<O>[/describe]      sobject.info / describe
    POST   /services/data/vXX.X/sobjects/<O>                 sobject.create (JSON, or multipart for ContentVersion)
    GET|PATCH|DELETE .../sobjects/<O>/<id>                   sobject.get / sobject.update / sobject.delete
    GET    .../sobjects/ContentVersion/<id>/VersionData      sobject.blob
    GET|PATCH|DELETE .../sobjects/<O>/<extField>/<value>     sobject.getByExternalId / sobject.upsert / sobject.delete
    POST   /services/data/vXX.X/composite                    composite (subrequests: query, queryMore, sObjects,
                                                                        collections; one counted call in all)
    POST|PATCH|GET|DELETE .../composite/sobjects             composite.sobjects.create / .update / .get / .delete
    PATCH  .../composite/sobjects/<O>/<extField>             composite.sobjects.upsert
    POST|GET .../jobs/ingest, GET|PATCH|DELETE .../jobs/ingest/<id>, PUT .../batches,
    GET .../jobs/ingest/<id>/successfulResults|failedResults|unprocessedrecords     bulk2.*
    POST .../jobs/query, GET .../jobs/query/<id>[/results]                           bulk2.*
    POST   */services/oauth2/token                           oauth.token       (not counted)
    POST   */services/Soap/u/XX.X                            soap.login        (not counted)

Every counted call consumes one unit of the org's daily allowance and carries
``Sforce-Limit-Info: api-usage=N/MAX``; when the allowance is used up every API call answers
403 ``REQUEST_LIMIT_EXCEEDED`` "TotalRequests Limit exceeded.".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import html
import json
import re
import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode


from email_sync.crm.http import PinnedCASession
from sandbox.faults import FaultKind, FaultRule
from sandbox.salesforce import bulk, soql
from sandbox.salesforce.org import (
    DEFAULT_API_VERSION,
    MAX_COLLECTION_RECORDS,
    Org,
    RecordError,
    RecordFaultRule,
    RequestError,
    is_id,
    normalize_id,
)
from sandbox.salesforce.seed import build_org, load_seed

MAX_COLLECTION_BLOB_BYTES = 500 * 1024 * 1024  # sObject Collections: total size of all files per request
from sandbox.server import Request, Response, SandboxServer

_VERSION_RE = re.compile(r"^v(\d+\.\d)$")
_MAX_CURSORS = 100
_COMPOSITE_MAX_SUBREQUESTS = 25
_COMPOSITE_MAX_QUERIES = 5  # queries (incl. queryMore) and sObject Collections per composite request
_COMPOSITE_QUERY_KINDS = frozenset({"query", "query_more", "collection", "collection_upsert"})
_COMPOSITE_KINDS = _COMPOSITE_QUERY_KINDS | {"describe", "sobject", "record", "external", "limits"}
_NOT_FOUND = "The requested resource does not exist"
_ROLLED_BACK = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "message": "Record rolled back because not all records were valid and the request was using "
                           "AllOrNone header", "fields": []}


@dataclass
class Route:
    op: str | None
    kind: str
    version: str = DEFAULT_API_VERSION
    parts: list[str] = field(default_factory=list)
    counts: bool = True  # against the daily API allowance
    auth: bool = True


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return Response.json([{"message": message, "errorCode": code}], status=status, headers=headers)


def _release_label(version: float) -> str:
    offset = int(round(version)) - 59
    season = ("Winter", "Spring", "Summer")[offset % 3]
    return f"{season} '{24 + offset // 3:02d}"


class SalesforceSandbox(SandboxServer):
    """A loopback Salesforce org over HTTPS (trustme CA) for simple-salesforce and the Airflow hook."""

    name = "salesforce"

    def __init__(self, seed_data: dict[str, Any] | None = None, *, host: str = "127.0.0.1", port: int = 0,
                 seed: int = 0) -> None:
        super().__init__(host, port, tls=True, seed=seed)
        self.org: Org = build_org(seed_data, seed=seed)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> SalesforceSandbox:
        return cls(load_seed(path), **kwargs)

    def start(self) -> SalesforceSandbox:
        super().start()
        # The base handler writes headers and body separately; without TCP_NODELAY every response
        # waits out the client's delayed ACK (~40 ms). Accepted sockets inherit the option on Linux.
        if self._httpd is not None:
            try:
                self._httpd.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        return self

    # -- convenience ----------------------------------------------------------------------
    @property
    def instance_url(self) -> str:
        return self.base_url

    @property
    def session_id(self) -> str:
        return self.org.session_id

    @property
    def api_usage(self) -> int:
        """API calls counted against today's allowance (what Sforce-Limit-Info reports)."""
        return self.org.api_used

    @property
    def daily_api_max(self) -> int:
        return self.org.settings.daily_api_max

    @daily_api_max.setter
    def daily_api_max(self, value: int) -> None:
        with self.org.lock:
            self.org.settings.daily_api_max = int(value)

    def reset_api_usage(self, used: int = 0) -> None:
        with self.org.lock:
            self.org.api_used = used
            self.org.api_rejected = 0

    def fail_records(self, object: str, when: Any = None, *, field: str | None = None,  # noqa: A002
                     contains: str | None = None, equals: Any = None,
                     status_code: str = "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                     message: str = "Record rejected by the sandbox's fault rule", fields: list[str] | None = None,
                     operations: tuple[str, ...] = ("insert", "update", "upsert"),
                     times: int | None = None) -> RecordFaultRule:
        """Reject matching records (REST, composite and Bulk 2.0 alike) with the given error."""
        rule = RecordFaultRule(object=object, when=when, field=field, contains=contains, equals=equals,
                               status_code=status_code, message=message, fields=list(fields or []),
                               operations=tuple(operations), times=times)
        return self.org.add_record_fault(rule)

    def clear_record_faults(self) -> None:
        self.org.clear_record_faults()

    def client(self, version: str = DEFAULT_API_VERSION, **kwargs: Any) -> Any:
        """A simple_salesforce.Salesforce bound to this sandbox (trusting its test CA)."""
        from simple_salesforce import Salesforce

        return Salesforce(session_id=self.session_id, instance_url=self.instance_url, version=version,
                          session=self.http_session(), **kwargs)

    def http_session(self) -> Any:
        """A requests.Session that trusts this sandbox's CA (even when REQUESTS_CA_BUNDLE is set)."""
        session = PinnedCASession()
        session.verify = str(self.ca_bundle)
        return session

    def state(self) -> dict[str, Any]:
        data = {"name": self.name, "instance_url": self.instance_url if self._httpd else None,
                "calls": self.calls.snapshot()}
        data.update(self.org.state())
        return data

    # -- routing ---------------------------------------------------------------------------
    def operation(self, request: Request) -> str | None:
        route = self._route(request)
        request._sf_route = route  # type: ignore[attr-defined]
        return route.op

    def _route(self, request: Request) -> Route:
        path = request.path
        method = request.method
        if path.endswith("/services/oauth2/token"):
            return Route("oauth.token", "oauth", counts=False, auth=False)
        soap = re.search(r"/services/Soap/u/(\d+\.\d)/?$", path)
        if soap:
            return Route("soap.login", "soap", version=soap.group(1), counts=False, auth=False)
        if not path.startswith("/services/data"):
            return Route(None, "unknown", counts=False, auth=False)
        rest = path[len("/services/data"):].strip("/")
        if rest == "":
            return Route("versions", "versions", counts=False, auth=False)
        segments = [unquote(s) for s in rest.split("/")]
        match = _VERSION_RE.match(segments[0])
        if not match:
            return Route("notFound", "not_found", counts=False, auth=False)
        version = match.group(1)
        if not (self.org.settings.min_api_version <= float(version) <= self.org.settings.max_api_version):
            return Route("notFound", "not_found", version=version, counts=False, auth=False)
        parts = [s for s in segments[1:] if s != ""]

        def r(op: str, kind: str) -> Route:
            return Route(op, kind, version=version, parts=parts)

        if not parts:
            return r("resources", "resources")
        head = parts[0]
        if head == "limits" and len(parts) == 1:
            return r("limits", "limits")
        if head in ("query", "queryAll"):
            if len(parts) == 1:
                return r(head, "query")
            return r("queryMore", "query_more")
        if head == "sobjects":
            if len(parts) == 1:
                return r("describeGlobal", "describe_global")
            if len(parts) == 2:
                return r("sobject.create" if method == "POST" else "sobject.info", "sobject")
            if len(parts) == 3 and parts[2] == "describe":
                return r("describe", "describe")
            if len(parts) == 3:
                op = {"GET": "sobject.get", "PATCH": "sobject.update", "DELETE": "sobject.delete"}.get(method,
                                                                                                    "sobject.record")
                return r(op, "record")
            if len(parts) == 4 and is_id(parts[2]) and self.org.object(parts[1]) is not None \
                    and self.org.object(parts[1]).field(parts[3]) is not None:  # type: ignore[union-attr]
                return r("sobject.blob", "blob")
            if len(parts) == 4:
                op = {"GET": "sobject.getByExternalId", "PATCH": "sobject.upsert",
                      "DELETE": "sobject.delete"}.get(method, "sobject.external")
                return r(op, "external")
        if head == "composite" and len(parts) == 1:
            return r("composite", "composite")
        if head == "composite" and len(parts) >= 2 and parts[1] == "sobjects":
            if len(parts) == 4 and method == "PATCH":
                return r("composite.sobjects.upsert", "collection_upsert")
            op = {"POST": "composite.sobjects.create", "PATCH": "composite.sobjects.update",
                  "GET": "composite.sobjects.get", "DELETE": "composite.sobjects.delete"}.get(method,
                                                                                              "composite.sobjects")
            if len(parts) == 3 and method in ("GET", "POST"):
                op = "composite.sobjects.get"
            return r(op, "collection")
        if head == "jobs" and len(parts) >= 2 and parts[1] in ("ingest", "query"):
            query = parts[1] == "query"
            if len(parts) == 2:
                if method == "POST":
                    return r("bulk2.createQueryJob" if query else "bulk2.createJob", "bulk_jobs")
                return r("bulk2.listQueryJobs" if query else "bulk2.listJobs", "bulk_jobs")
            if len(parts) == 3:
                if method == "PATCH":
                    state = ""
                    try:
                        state = (request.json() or {}).get("state", "")
                    except (ValueError, AttributeError):
                        pass
                    op = {"UploadComplete": "bulk2.uploadComplete", "Aborted": "bulk2.abortJob"}.get(state,
                                                                                                   "bulk2.setState")
                    return r(op, "bulk_job")
                if method == "DELETE":
                    return r("bulk2.deleteJob", "bulk_job")
                return r("bulk2.getQueryJob" if query else "bulk2.getJob", "bulk_job")
            if len(parts) == 4:
                if parts[3] == "batches" and not query:
                    return r("bulk2.upload", "bulk_upload")
                if parts[3] == "results" and query:
                    return r("bulk2.queryResults", "bulk_query_results")
                names = {"successfulresults": "bulk2.successfulResults", "failedresults": "bulk2.failedResults",
                         "unprocessedrecords": "bulk2.unprocessedRecords"}
                if parts[3].lower() in names and not query:
                    return r(names[parts[3].lower()], "bulk_results")
        return r("notFound", "not_found")

    # -- dispatch ----------------------------------------------------------------------------
    def dispatch(self, request: Request, operation: str | None) -> Response:
        route: Route = getattr(request, "_sf_route", None) or self._route(request)
        org = self.org
        if route.kind == "unknown":
            return _error(404, "NOT_FOUND", _NOT_FOUND)
        too_long = self._uri_check(request)
        if too_long is not None:
            return too_long
        user_id: str | None = None
        if route.auth:
            token = self._bearer(request)
            user_id = org.user_for_session(token) if token else None
            if user_id is None:
                return _error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if route.counts and not org.consume_api_call():
            return _error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.",
                          headers={"Sforce-Limit-Info": org.limit_info()})
        response = self._answer(request, route, user_id or None)
        if route.auth:
            response.headers["Sforce-Limit-Info"] = org.limit_info()
        return response

    def _uri_check(self, request: Request) -> Response | None:
        limit = self.org.settings.max_uri_bytes
        query = urlencode(request.query, doseq=True)
        uri = len(request.path.encode()) + (1 + len(query) if query else 0)
        if uri > limit:
            return Response.text("<html><body><h1>414 URI Too Long</h1></body></html>", status=414,
                                 content_type="text/html")
        header_bytes = sum(len(k) + len(v) + 4 for k, v in request.headers.items())
        if uri + header_bytes > limit:
            return Response.text("<html><body><h1>431 Request Header Fields Too Large</h1></body></html>",
                                 status=431, content_type="text/html")
        return None

    @staticmethod
    def _bearer(request: Request) -> str | None:
        value = request.headers.get("authorization", "")
        for scheme in ("Bearer ", "OAuth "):
            if value.startswith(scheme):
                return value[len(scheme):].strip()
        return None

    @staticmethod
    def _body(request: Request) -> Any:
        try:
            return json.loads(request.body or b"null")
        except ValueError as exc:
            raise RequestError(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}") from None

    def _object(self, name: str) -> Any:
        obj = self.org.object(name)
        if obj is None:
            raise RequestError(404, "NOT_FOUND", _NOT_FOUND)
        return obj

    @staticmethod
    def _method(request: Request, *allowed: str) -> None:
        if request.method not in allowed:
            raise RequestError(405, "METHOD_NOT_ALLOWED",
                               f"HTTP Method '{request.method}' not allowed. Allowed are {','.join(allowed)}")

    # -- handlers: discovery -------------------------------------------------------------------
    def _h_not_found(self, request: Request, route: Route, user: str | None) -> Response:
        return _error(404, "NOT_FOUND", _NOT_FOUND)

    def _h_versions(self, request: Request, route: Route, user: str | None) -> Response:
        s = self.org.settings
        versions = []
        number = int(s.min_api_version)
        while number <= s.max_api_version:
            versions.append({"label": _release_label(number), "url": f"/services/data/v{number}.0",
                             "version": f"{number}.0"})
            number += 1
        return Response.json(versions)

    def _h_resources(self, request: Request, route: Route, user: str | None) -> Response:
        base = f"/services/data/v{route.version}"
        return Response.json({"limits": f"{base}/limits", "query": f"{base}/query", "queryAll": f"{base}/queryAll",
                              "sobjects": f"{base}/sobjects", "composite": f"{base}/composite",
                              "jobs": f"{base}/jobs"})

    def _h_limits(self, request: Request, route: Route, user: str | None) -> Response:
        self._method(request, "GET")
        return Response.json(self.org.limits())

    def _h_describe_global(self, request: Request, route: Route, user: str | None) -> Response:
        self._method(request, "GET")
        return Response.json({"encoding": "UTF-8", "maxBatchSize": MAX_COLLECTION_RECORDS,
                              "sobjects": [o.global_entry(route.version) for o in self.org.schema.values()]})

    def _h_describe(self, request: Request, route: Route, user: str | None) -> Response:
        self._method(request, "GET")
        return Response.json(self._object(route.parts[1]).describe(route.version))

    # -- handlers: query -----------------------------------------------------------------------
    def _batch_size(self, request: Request, default: int) -> int:
        options = request.headers.get("sforce-query-options", "")
        match = re.search(r"batchSize\s*=\s*(\d+)", options)
        size = int(match.group(1)) if match else default
        return max(200, min(2000, size))

    def _h_query(self, request: Request, route: Route, user: str | None) -> Response:
        self._method(request, "GET")
        text = request.param("q")
        if text is None:
            raise RequestError(400, "MALFORMED_QUERY", "A query string has to be specified")
        parsed = soql.parse(text, self.org)
        include_deleted = route.parts[0] == "queryAll"
        result = soql.execute(parsed, self.org, include_deleted=include_deleted, version=route.version)
        if parsed.count_only:
            return Response.json({"totalSize": result.total_size, "done": True, "records": []})
        size = self._batch_size(request, self.org.settings.query_batch_size)
        return Response.json(self._page(route, result.records, 0, size))

    def _page(self, route: Route, records: list[dict[str, Any]], start: int, size: int,
              cursor: str | None = None) -> dict[str, Any]:
        page = records[start:start + size]
        end = start + len(page)
        body: dict[str, Any] = {"totalSize": len(records), "done": end >= len(records)}
        org = self.org
        with org.lock:
            if end < len(records):
                if cursor is None:
                    cursor = org.new_id("01g")
                org.cursors[cursor] = (records, size)
                org.cursors.move_to_end(cursor)
                while len(org.cursors) > _MAX_CURSORS:
                    org.cursors.popitem(last=False)
                body["nextRecordsUrl"] = f"/services/data/v{route.version}/{route.parts[0]}/{cursor}-{end}"
            elif cursor is not None:
                org.cursors.pop(cursor, None)
        body["records"] = page
        return body

    def _h_query_more(self, request: Request, route: Route, user: str | None) -> Response:
        self._method(request, "GET")
        locator = route.parts[1]
        cursor, _, offset = locator.rpartition("-")
        with self.org.lock:
            entry = self.org.cursors.get(cursor)
        if entry is None or not offset.isdigit():
            raise RequestError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        records, size = entry
        size = self._batch_size(request, size) if "sforce-query-options" in request.headers else size
        return Response.json(self._page(route, records, int(offset), size, cursor))

    # -- handlers: Composite ---------------------------------------------------------------------
    def _h_composite(self, request: Request, route: Route, user: str | None) -> Response:
        """``POST /composite``: up to 25 subrequests, at most 5 of them queries or collections.

        The whole request is one call against the allowance (it was counted on the way in);
        subrequests are answered in order, each with its own status and body. References
        between subrequests (``@{ref.field}``) are not supported, nor is ``allOrNone`` with
        writes (the sandbox cannot roll a subrequest back): both are refused with 400.
        """
        self._method(request, "POST")
        body = self._body(request)
        subrequests = body.get("compositeRequest") if isinstance(body, dict) else None
        if not isinstance(subrequests, list) or not subrequests:
            raise RequestError(400, "JSON_PARSER_ERROR", "compositeRequest: a list of subrequests is required")
        if len(subrequests) > _COMPOSITE_MAX_SUBREQUESTS:
            raise RequestError(400, "LIMIT_EXCEEDED", f"Limit Exceeded: the maximum number of subrequests "
                               f"({_COMPOSITE_MAX_SUBREQUESTS}) has been exceeded")
        planned = [self._composite_subrequest(request, sub) for sub in subrequests]
        if sum(sub_route.kind in _COMPOSITE_QUERY_KINDS for _, sub_route, _ in planned) > _COMPOSITE_MAX_QUERIES:
            raise RequestError(400, "LIMIT_EXCEEDED", f"Limit Exceeded: at most {_COMPOSITE_MAX_QUERIES} "
                               "subrequests may be queries or sObject Collections")
        all_or_none = bool(body.get("allOrNone", False))
        if all_or_none and any(sub.method != "GET" for sub, _, _ in planned):
            raise RequestError(400, "INVALID_OPERATION", "the sandbox does not support allOrNone with writes")
        answers: list[dict[str, Any]] = []
        halted = False
        for sub, sub_route, reference in planned:
            if halted:
                response = _error(400, "PROCESSING_HALTED", "The transaction was rolled back since another "
                                  "operation in the same transaction failed.")
            else:
                response = self._answer(sub, sub_route, user)
                halted = all_or_none and response.status >= 300
            answers.append({"body": json.loads(response.body or b"null"), "httpHeaders": {},
                            "httpStatusCode": response.status, "referenceId": reference})
        return Response.json({"compositeResponse": answers})

    def _composite_subrequest(self, request: Request, sub: Any) -> tuple[Request, Route, str]:
        if not isinstance(sub, dict) or not isinstance(sub.get("url"), str) or not sub.get("referenceId"):
            raise RequestError(400, "JSON_PARSER_ERROR", "each subrequest needs method, url and referenceId")
        if "@{" in sub["url"] or "@{" in json.dumps(sub.get("body")):
            raise RequestError(400, "INVALID_OPERATION", "the sandbox does not support composite references")
        path, _, query = sub["url"].partition("?")
        headers = {k: v for k, v in request.headers.items() if k in ("authorization", "sforce-query-options")}
        headers.update({str(k).lower(): str(v) for k, v in (sub.get("httpHeaders") or {}).items()})
        payload = b"" if sub.get("body") is None else json.dumps(sub["body"]).encode()
        sub_request = Request(str(sub.get("method", "GET")).upper(), path, parse_qs(query, keep_blank_values=True),
                              headers, payload)
        sub_route = self._route(sub_request)
        if sub_route.kind not in _COMPOSITE_KINDS:
            raise RequestError(400, "INVALID_OPERATION", f"not supported in a composite request: {path}")
        return sub_request, sub_route, str(sub["referenceId"])

    def _answer(self, request: Request, route: Route, user: str | None) -> Response:
        """The handler's response, errors in Salesforce's JSON shape."""
        try:
            return getattr(self, f"_h_{route.kind}")(request, route, user)
        except RequestError as error:
            return Response.json(error.body(), status=error.status)
        except RecordError as error:
            return Response.json([error.to_rest()], status=400)
        except soql.SoqlError as error:
            return _error(400, error.error_code, error.message)

    # -- handlers: sObjects --------------------------------------------------------------------
    def _h_sobject(self, request: Request, route: Route, user: str | None) -> Response:
        obj = self._object(route.parts[1])
        if request.method == "GET":
            return Response.json({"objectDescribe": obj.global_entry(route.version), "recentItems": []})
        self._method(request, "GET", "POST")
        blob = None
        content_type = request.headers.get("content-type", "")
        if content_type.startswith("multipart/"):
            data, blob = self._multipart(request, content_type)
        else:
            data = self._body(request)
        if not isinstance(data, dict):
            raise RequestError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from the body")
        if _has_key(data, "Id"):
            raise RecordError("INVALID_FIELD_FOR_INSERT_UPDATE", "Unable to create/update fields: Id. Please check "
                              "the security settings of this field and verify that it is read/write for your profile "
                              "or permission set.", ["Id"])
        record_id = self.org.insert(obj.name, data, user_id=user, blob=blob)
        return Response.json({"id": record_id, "success": True, "errors": []}, status=201)

    def _multipart_parts(self, request: Request, content_type: str) -> list[tuple[str, bytes]]:
        """(part name, payload) of a multipart/form-data body, in order."""
        match = re.search(r'boundary="?([^";]+)"?', content_type)
        if not match:
            raise RequestError(400, "MALFORMED_MULTIPART", "Missing multipart boundary")
        boundary = b"--" + match.group(1).encode()
        parts = []
        for chunk in request.body.split(boundary)[1:]:
            if chunk.startswith(b"--"):
                break
            head, _, payload = chunk.lstrip(b"\r\n").partition(b"\r\n\r\n")
            payload = payload[:-2] if payload.endswith(b"\r\n") else payload
            name_match = re.search(rb'name="([^"]+)"', head)
            parts.append((name_match.group(1).decode() if name_match else "", payload))
        return parts

    def _multipart(self, request: Request, content_type: str) -> tuple[dict[str, Any], bytes | None]:
        entity: dict[str, Any] | None = None
        blob: bytes | None = None
        for name, payload in self._multipart_parts(request, content_type):
            if name.startswith("entity_"):
                try:
                    entity = json.loads(payload or b"{}")
                except ValueError:
                    raise RequestError(400, "JSON_PARSER_ERROR", "entity part is not valid JSON") from None
            else:
                blob = payload
        if entity is None:
            raise RequestError(400, "MALFORMED_MULTIPART", "Missing the entity_content part")
        return entity, blob

    def _find(self, route: Route, record_id: str) -> tuple[Any, dict[str, Any]]:
        obj = self._object(route.parts[1])
        found = self.org.get(record_id) if is_id(record_id) else None
        if found is None or found[0] != obj.name:
            raise RequestError(404, "NOT_FOUND", _NOT_FOUND)
        return obj, found[1]

    def _h_record(self, request: Request, route: Route, user: str | None) -> Response:
        record_id = route.parts[2]
        if request.method == "GET":
            obj, record = self._find(route, record_id)
            fields = request.param("fields")
            names = [f.strip() for f in fields.split(",") if f.strip()] if fields else None
            return Response.json(self.org.record_json(obj.name, record, names, route.version))
        if request.method == "PATCH":
            obj, record = self._find(route, record_id)
            data = self._body(request)
            if not isinstance(data, dict):
                raise RequestError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from the body")
            self.org.update(obj.name, record["Id"], data, user_id=user)
            return Response(204)
        if request.method == "DELETE":
            obj, record = self._find(route, record_id)
            self.org.delete(obj.name, record["Id"])
            return Response(204)
        self._method(request, "GET", "PATCH", "DELETE")
        raise AssertionError("unreachable: _method() rejected the method")

    def _h_blob(self, request: Request, route: Route, user: str | None) -> Response:
        self._method(request, "GET")
        obj, record = self._find(route, route.parts[2])
        data = self.org.file_bytes(record["Id"]) if obj.name == "ContentVersion" else None
        if data is None:
            raise RequestError(404, "NOT_FOUND", _NOT_FOUND)
        return Response(200, data, {"Content-Type": "application/octetstream"})

    def _h_external(self, request: Request, route: Route, user: str | None) -> Response:
        obj = self._object(route.parts[1])
        field_name, value = route.parts[2], route.parts[3]
        f = obj.field(field_name)
        if request.method == "PATCH":
            data = self._body(request)
            if not isinstance(data, dict):
                raise RequestError(400, "JSON_PARSER_ERROR", "Cannot deserialize instance of sObject from the body")
            record_id, created = self.org.upsert(obj.name, field_name, value, data, user_id=user)
            body = {"id": record_id, "success": True, "errors": [], "created": created}
            if created:
                return Response.json(body, status=201)
            return Response.json(body) if float(route.version) >= 46.0 else Response(204)
        if f is None or not (f.external_id or f.id_lookup or f.name == "Id"):
            raise RequestError(404, "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: "
                               f"{field_name}")
        record_id = normalize_id(value) if f.name == "Id" and is_id(value) else \
            self.org.find_by_external_id(obj.name, f.name, value)
        if record_id is None and f.id_lookup and not f.unique:
            matches = self.org.query_records(obj.name, lambda r: str(r.get(f.name) or "").lower() == value.lower())
            if len(matches) > 1:
                return Response.json([self.org.record_url(obj.name, m["Id"], route.version) for m in matches],
                                     status=300)
            record_id = matches[0]["Id"] if matches else None
        found = self.org.get(record_id) if record_id else None
        if found is None:
            raise RequestError(404, "NOT_FOUND", _NOT_FOUND)
        if request.method == "DELETE":
            self.org.delete(obj.name, found[1]["Id"])
            return Response(204)
        self._method(request, "GET", "PATCH", "DELETE")
        fields = request.param("fields")
        names = [x.strip() for x in fields.split(",") if x.strip()] if fields else None
        return Response.json(self.org.record_json(obj.name, found[1], names, route.version))

    # -- handlers: sObject Collections -----------------------------------------------------------
    def _collection_body(self, request: Request) -> tuple[list[Any], bool]:
        body = self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise RequestError(400, "JSON_PARSER_ERROR", "The request body must contain a records array")
        records = body["records"]
        if len(records) > MAX_COLLECTION_RECORDS:
            raise RequestError(400, "EXCEEDED_ID_LIMIT",
                               "record limit reached. cannot submit more than 200 records into this call")
        if not records:
            raise RequestError(400, "INVALID_FIELD", "No records to process")
        return records, bool(body.get("allOrNone", False))

    def _collection_multipart(self, request: Request) -> tuple[list[Any], bool, dict[str, bytes]]:
        """sObject Collections with blobs: a JSON part (``collection``) whose records name their
        binary part (``attributes.binaryPartName``, alias ``VersionData``), then the binary parts."""
        parts = self._multipart_parts(request, request.headers.get("content-type", ""))
        json_parts = [payload for name, payload in parts if name in ("collection", "entity_content")]
        if not json_parts:
            raise RequestError(400, "MALFORMED_MULTIPART", "Missing the collection part")
        try:
            body = json.loads(json_parts[0] or b"{}")
        except ValueError:
            raise RequestError(400, "JSON_PARSER_ERROR", "collection part is not valid JSON") from None
        if not isinstance(body, dict) or not isinstance(body.get("records"), list) or not body["records"]:
            raise RequestError(400, "JSON_PARSER_ERROR", "The request body must contain a records array")
        if len(body["records"]) > MAX_COLLECTION_RECORDS:
            raise RequestError(400, "EXCEEDED_ID_LIMIT",
                               "record limit reached. cannot submit more than 200 records into this call")
        blobs = {name: payload for name, payload in parts if name not in ("collection", "entity_content")}
        if sum(len(b) for b in blobs.values()) > MAX_COLLECTION_BLOB_BYTES:
            raise RequestError(400, "EXCEEDED_MAX_SIZE_REQUEST", "The total size of the files exceeds 500 MB")
        return body["records"], bool(body.get("allOrNone", False)), blobs

    @staticmethod
    def _type_of(record: Any, default: str | None = None) -> str:
        if not isinstance(record, dict):
            raise RequestError(400, "JSON_PARSER_ERROR", "Each record must be a JSON object")
        attributes = record.get("attributes") or {}
        object_name = attributes.get("type") if isinstance(attributes, dict) else None
        if not object_name and default is None:
            raise RequestError(400, "INVALID_TYPE", "Must send a concrete entity type.")
        return object_name or default or ""

    def _run_collection(self, records: list[Any], all_or_none: bool,
                        apply: Any) -> list[dict[str, Any]]:
        org = self.org
        with org.atomic() as rollback:
            results: list[dict[str, Any]] = []
            for position, record in enumerate(records):
                try:
                    results.append(apply(position, record))
                except RecordError as error:
                    entry: dict[str, Any] = {"success": False, "errors": [error.to_dict()]}
                    record_id = record.get("Id") if isinstance(record, dict) else None
                    if record_id:
                        entry = {"id": record_id, **entry}
                    results.append(entry)
            if all_or_none and any(not r["success"] for r in results):
                rollback()
                for position, entry in enumerate(results):
                    if entry["success"]:
                        record = records[position]
                        rolled: dict[str, Any] = {"success": False, "errors": [dict(_ROLLED_BACK)]}
                        if isinstance(record, dict) and record.get("Id"):
                            rolled = {"id": record["Id"], **rolled}
                        results[position] = rolled
        return results

    def _h_collection(self, request: Request, route: Route, user: str | None) -> Response:
        org = self.org
        if route.op == "composite.sobjects.get":
            return self._collection_get(request, route)
        if request.method == "POST":
            blobs: dict[str, bytes] = {}
            if request.headers.get("content-type", "").startswith("multipart/"):
                records, all_or_none, blobs = self._collection_multipart(request)
            else:
                records, all_or_none = self._collection_body(request)
            types = [self._type_of(r) for r in records]
            chunks = sum(1 for i, t in enumerate(types) if i == 0 or types[i - 1] != t)
            if chunks > 10:
                raise RequestError(400, "INVALID_BATCH_REQUEST",
                                   "Your request can't have more than 10 chunks of sObject types")

            def create(position: int, record: dict[str, Any]) -> dict[str, Any]:
                if _has_key(record, "Id"):
                    raise RecordError("INVALID_FIELD_FOR_INSERT_UPDATE", "cannot specify Id in an insert call", [])
                attributes = record.get("attributes") or {}
                blob = None
                if attributes.get("binaryPartName"):
                    if attributes.get("binaryPartNameAlias") != "VersionData" or attributes["binaryPartName"] not in blobs:
                        raise RecordError("INVALID_FIELD", "binaryPartName must name a binary part and "
                                          "binaryPartNameAlias the blob field (VersionData)", [])
                    blob = blobs[attributes["binaryPartName"]]
                record_id = org.insert(types[position], record, user_id=user, blob=blob)
                return {"id": record_id, "success": True, "errors": []}

            return Response.json(self._run_collection(records, all_or_none, create))
        if request.method == "PATCH":
            records, all_or_none = self._collection_body(request)
            types = [self._type_of(r) for r in records]

            def update(position: int, record: dict[str, Any]) -> dict[str, Any]:
                record_id = record.get("Id")
                if not record_id:
                    raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call", [])
                org.update(types[position], record_id, record, user_id=user)
                return {"id": normalize_id(record_id), "success": True, "errors": []}

            return Response.json(self._run_collection(records, all_or_none, update))
        if request.method == "DELETE":
            ids = [i for i in (request.param("ids") or "").split(",") if i]
            if not ids:
                raise RequestError(400, "MISSING_ARGUMENT", "ids parameter is required")
            if len(ids) > MAX_COLLECTION_RECORDS:
                raise RequestError(400, "EXCEEDED_ID_LIMIT",
                                   "record limit reached. cannot submit more than 200 records into this call")
            all_or_none = (request.param("allOrNone") or "false").lower() == "true"

            def delete(position: int, record: dict[str, Any]) -> dict[str, Any]:
                return {"id": org.delete(None, record["Id"]), "success": True, "errors": []}

            return Response.json(self._run_collection([{"Id": i} for i in ids], all_or_none, delete))
        self._method(request, "GET", "POST", "PATCH", "DELETE")
        raise AssertionError("unreachable: _method() rejected the method")

    def _collection_get(self, request: Request, route: Route) -> Response:
        if len(route.parts) < 3:
            raise RequestError(400, "MISSING_ARGUMENT", "An sObject type is required: composite/sobjects/<type>")
        obj = self._object(route.parts[2])
        if request.method == "POST":
            body = self._body(request) or {}
            ids, fields = body.get("ids") or [], body.get("fields") or []
        else:
            ids = [i for i in (request.param("ids") or "").split(",") if i]
            fields = [f for f in (request.param("fields") or "").split(",") if f]
        if not ids or not fields:
            raise RequestError(400, "MISSING_ARGUMENT", "ids and fields are required")
        if len(ids) > 2000:
            raise RequestError(400, "EXCEEDED_ID_LIMIT", "cannot retrieve more than 2000 records in one call")
        out: list[Any] = []
        for record_id in ids:
            found = self.org.get(record_id) if is_id(record_id) else None
            out.append(self.org.record_json(obj.name, found[1], fields, route.version)
                       if found and found[0] == obj.name else None)
        return Response.json(out)

    def _h_collection_upsert(self, request: Request, route: Route, user: str | None) -> Response:
        obj = self._object(route.parts[2])
        field_name = route.parts[3]
        f = obj.field(field_name)
        if f is None or not (f.external_id or f.name == "Id"):
            raise RequestError(400, "INVALID_FIELD", f"Field name provided, {field_name} is not an External ID or "
                               f"indexed field for {obj.name}")
        records, all_or_none = self._collection_body(request)
        for record in records:
            if self._type_of(record, obj.name).lower() != obj.name.lower():
                raise RequestError(400, "INVALID_TYPE", "All records must be of the type in the URL")
        keys = [str(_get(r, f.name) or "").lower() for r in records]
        duplicates = {k for k in keys if k and keys.count(k) > 1}
        org = self.org

        def upsert(position: int, record: dict[str, Any]) -> dict[str, Any]:
            value = _get(record, f.name)
            if value in (None, ""):
                raise RecordError("MISSING_ARGUMENT", f"{f.name} not specified", [])
            if str(value).lower() in duplicates:
                raise RecordError("DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {value}", [f.name])
            record_id, created = org.upsert(obj.name, f.name, value, record, user_id=user)
            return {"id": record_id, "success": True, "errors": [], "created": created}

        return Response.json(self._run_collection(records, all_or_none, upsert))

    # -- handlers: Bulk API 2.0 ------------------------------------------------------------------
    def _job(self, route: Route) -> Any:
        with self.org.lock:
            job = self.org.jobs.get(normalize_id(route.parts[2]) if is_id(route.parts[2]) else route.parts[2])
        if job is None or job.is_query != (route.parts[1] == "query"):
            raise RequestError(404, "NOT_FOUND", _NOT_FOUND)
        return job

    def _h_bulk_jobs(self, request: Request, route: Route, user: str | None) -> Response:
        query = route.parts[1] == "query"
        if request.method == "POST":
            spec = self._body(request)
            if query:
                return Response.json(bulk.create_query_job(self.org, spec, user, route.version).info(full=False))
            return Response.json(bulk.create_ingest_job(self.org, spec, user, route.version).info(full=False))
        self._method(request, "GET", "POST")
        with self.org.lock:
            jobs = [j.info(full=False) for j in self.org.jobs.values() if j.is_query == query]
        return Response.json({"done": True, "records": jobs, "nextRecordsUrl": None})

    def _h_bulk_job(self, request: Request, route: Route, user: str | None) -> Response:
        job = self._job(route)
        if request.method == "GET":
            return Response.json(bulk.poll(self.org, job))
        if request.method == "PATCH":
            body = self._body(request)
            state = body.get("state") if isinstance(body, dict) else None
            if job.is_query:
                if state != "Aborted":
                    raise RequestError(400, "INVALIDJOBSTATE", f"Invalid state change to {state}")
                job.state = "Aborted"
                return Response.json(job.info(full=False))
            return Response.json(bulk.set_state(self.org, job, str(state)))
        if request.method == "DELETE":
            if not job.is_query and job.state in ("Open", "InProgress"):
                raise RequestError(409, "INVALIDJOBSTATE", f"Job {job.id} can't be deleted in state {job.state}")
            with self.org.lock:
                self.org.jobs.pop(job.id, None)
            return Response(204)
        self._method(request, "GET", "PATCH", "DELETE")
        raise AssertionError("unreachable: _method() rejected the method")

    def _h_bulk_upload(self, request: Request, route: Route, user: str | None) -> Response:
        self._method(request, "PUT")
        job = self._job(route)
        if not request.headers.get("content-type", "").lower().startswith("text/csv"):
            raise RequestError(400, "INVALIDBATCH", "InvalidBatch : Content-Type must be text/csv")
        bulk.upload(self.org, job, request.body)
        return Response(201)

    def _h_bulk_results(self, request: Request, route: Route, user: str | None) -> Response:
        self._method(request, "GET")
        job = self._job(route)
        if job.state in ("Open", "UploadComplete", "InProgress"):
            raise RequestError(400, "INVALIDJOBSTATE", f"Job {job.id} is not complete (state: {job.state})")
        return Response.text(bulk.results(job, route.parts[3]), content_type="text/csv")

    def _h_bulk_query_results(self, request: Request, route: Route, user: str | None) -> Response:
        self._method(request, "GET")
        job = self._job(route)
        max_records = request.param("maxRecords")
        text, locator, count = bulk.query_results(job, request.param("locator"),
                                                  int(max_records) if max_records and max_records.isdigit() else None)
        return Response.text(text, content_type="text/csv", headers={"Sforce-Locator": locator,
                                                                      "Sforce-NumberOfRecords": str(count)})

    # -- handlers: logins --------------------------------------------------------------------------
    def _check_login(self, username: str, password: str) -> str | None:
        org = self.org
        with org.lock:
            credentials = org.credentials.get(username.lower())
            if credentials is None:
                return None
            secret, token = credentials
            if not secret or password not in (secret, secret + token):
                return None
            users = org.query_records("User", lambda r: r["Username"].lower() == username.lower())
            if not users or not users[0].get("IsActive", True):
                return None
            return users[0]["Id"]

    def _h_oauth(self, request: Request, route: Route, user: str | None) -> Response:
        if request.method != "POST":
            return Response.json({"error": "invalid_request", "error_description": "must use HTTP POST"}, status=400)
        form = {k: v[0] for k, v in parse_qs(request.body.decode("utf-8", "replace"),
                                             keep_blank_values=True).items()}
        form.update({k: v[0] for k, v in request.query.items() if k not in form})
        s = self.org.settings
        grant = form.get("grant_type")
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        basic = request.headers.get("authorization", "")
        if basic.startswith("Basic "):
            try:
                client_id, _, client_secret = base64.b64decode(basic[6:]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                pass
        if grant not in ("password", "client_credentials"):
            return Response.json({"error": "unsupported_grant_type", "error_description": "grant type not supported"},
                                 status=400)
        if client_id != s.client_id:
            return Response.json({"error": "invalid_client_id", "error_description": "client identifier invalid"},
                                 status=400)
        if client_secret != s.client_secret:
            return Response.json({"error": "invalid_client", "error_description": "invalid client credentials"},
                                 status=400)
        if grant == "password":
            user_id = self._check_login(form.get("username", ""), form.get("password", ""))
            if user_id is None:
                return Response.json({"error": "invalid_grant", "error_description": "authentication failure"},
                                     status=400)
        else:
            user_id = self.org.default_user_id or ""
        token = self.org.add_session(user_id)
        issued = str(int(self.org.clock() * 1000))
        identity = f"{self.instance_url}/id/{self.org.org_id}/{user_id}"
        signature = base64.b64encode(hmac.new(s.client_secret.encode(), (identity + issued).encode(),
                                              hashlib.sha256).digest()).decode()
        return Response.json({"access_token": token, "instance_url": self.instance_url, "id": identity,
                              "token_type": "Bearer", "issued_at": issued, "signature": signature})

    def _h_soap(self, request: Request, route: Route, user: str | None) -> Response:
        body = request.body.decode("utf-8", "replace")

        def element(name: str) -> str:
            match = re.search(rf"<(?:\w+:)?{name}>(.*?)</(?:\w+:)?{name}>", body, re.S)
            return html.unescape(match.group(1)) if match else ""

        user_id = self._check_login(element("username"), element("password"))
        if user_id is None:
            fault = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
                     'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
                     'xmlns:sf="urn:fault.partner.soap.sforce.com" '
                     'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
                     '<faultcode>INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN: Invalid username, password, '
                     'security token; or user locked out.</faultstring><detail><sf:LoginFault '
                     'xsi:type="sf:LoginFault"><sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode>'
                     '<sf:exceptionMessage>Invalid username, password, security token; or user locked out.'
                     '</sf:exceptionMessage></sf:LoginFault></detail></soapenv:Fault></soapenv:Body>'
                     '</soapenv:Envelope>')
            return Response.text(fault, status=500, content_type="text/xml; charset=utf-8")
        token = self.org.add_session(user_id)
        _, record = self.org.get(user_id)  # type: ignore[misc]
        version = route.version
        base = self.instance_url
        xml = (
            '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
            'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse><result>'
            f"<metadataServerUrl>{base}/services/Soap/m/{version}/{self.org.org_id}</metadataServerUrl>"
            "<passwordExpired>false</passwordExpired>"
            f"<sandbox>{str(self.org.settings.is_sandbox).lower()}</sandbox>"
            f"<serverUrl>{base}/services/Soap/u/{version}/{self.org.org_id}</serverUrl>"
            f"<sessionId>{html.escape(token)}</sessionId><userId>{user_id}</userId><userInfo>"
            f"<organizationId>{self.org.org_id}</organizationId>"
            f"<organizationName>{html.escape(self.org.settings.name)}</organizationName>"
            f"<userEmail>{html.escape(record.get('Email') or '')}</userEmail>"
            f"<userFullName>{html.escape(record.get('Name') or '')}</userFullName>"
            f"<userName>{html.escape(record['Username'])}</userName>"
            f"<userTimeZone>{record.get('TimeZoneSidKey') or ''}</userTimeZone>"
            "</userInfo></result></loginResponse></soapenv:Body></soapenv:Envelope>"
        )
        return Response.text(xml, content_type="text/xml; charset=utf-8")

    # -- faults ------------------------------------------------------------------------------------
    def fault_response(self, operation: str, rule: FaultRule) -> Response:
        headers = {"Sforce-Limit-Info": self.org.limit_info()}
        if rule.retry_after is not None:
            seconds = rule.retry_after
            headers["Retry-After"] = str(int(seconds)) if float(seconds).is_integer() else str(seconds)
        if operation == "soap.login":
            fault = ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
                     'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
                     'xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body><soapenv:Fault>'
                     '<faultcode>SERVER_UNAVAILABLE</faultcode><faultstring>Server Unavailable</faultstring>'
                     '<detail><sf:UnexpectedErrorFault><sf:exceptionCode>SERVER_UNAVAILABLE</sf:exceptionCode>'
                     '<sf:exceptionMessage>Server Unavailable</sf:exceptionMessage></sf:UnexpectedErrorFault>'
                     '</detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>')
            status = 403 if rule.kind is FaultKind.THROTTLE else rule.status
            return Response.text(fault, status=status, content_type="text/xml; charset=utf-8", headers=headers)
        if rule.kind is FaultKind.THROTTLE:
            return _error(403, "REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded.", headers)
        status = rule.status
        if status in (502, 504):
            label = "Bad Gateway" if status == 502 else "Gateway Timeout"
            return Response.text(f"<html><body><h1>{status} {label}</h1></body></html>", status=status,
                                 content_type="text/html", headers=headers)
        code, message = {
            400: ("MALFORMED_QUERY", "Injected bad request"),
            401: ("INVALID_SESSION_ID", "Session expired or invalid"),
            403: ("REQUEST_LIMIT_EXCEEDED", "ConcurrentPerOrgLongTxn Limit exceeded."),
            404: ("NOT_FOUND", _NOT_FOUND),
            409: ("CONFLICT", "Conflict"),
            429: ("REQUEST_LIMIT_EXCEEDED", "Too many requests. Retry later."),
            500: ("UNKNOWN_EXCEPTION", "An unexpected error occurred. Please include this ErrorId if you contact "
                                       f"support: {secrets.randbelow(10**9)}-{secrets.randbelow(10**5)} "
                                       "(sandbox injected)"),
            503: ("SERVER_UNAVAILABLE", "Server Unavailable: the server is temporarily unable to handle the "
                                        "request (sandbox injected)"),
        }.get(status, ("UNKNOWN_EXCEPTION", f"Injected HTTP {status}"))
        return _error(status, code, message, headers)

    # -- control API -----------------------------------------------------------------------------
    def _control(self, request: Request) -> Response:
        what = request.path[len("/_sandbox/"):].strip("/")
        org = self.org
        if what == "org":
            if request.method == "PATCH":
                changes = request.json() or {}
                allowed = {"daily_api_max", "max_file_bytes", "bulk_in_progress_polls", "query_batch_size",
                           "max_uri_bytes", "client_id", "client_secret"}
                bad = set(changes) - allowed - {"api_used"}
                if bad:
                    return Response.json({"error": f"not changeable at runtime: {sorted(bad)}"}, status=400)
                with org.lock:
                    for key, value in changes.items():
                        if key == "api_used":
                            org.api_used = int(value)
                        else:
                            setattr(org.settings, key, value)
            return Response.json(org.public_settings() | {"api_used": org.api_used})
        if what == "api_usage/reset" and request.method == "POST":
            self.reset_api_usage()
            return Response.json({"ok": True})
        if what == "sessions/expire" and request.method == "POST":
            org.expire_sessions()
            return Response.json({"ok": True})
        if what == "record_faults":
            if request.method == "POST":
                spec = request.json() or {}
                try:
                    rule = self.fail_records(**spec)
                except TypeError as exc:
                    return Response.json({"error": str(exc)}, status=400)
                return Response.json(rule.to_dict(), status=201)
            if request.method == "DELETE":
                self.clear_record_faults()
                return Response.json({"ok": True})
            return Response.json([rule.to_dict() for rule in org.record_faults])
        return super()._control(request)


def _has_key(data: dict[str, Any], name: str) -> bool:
    return any(k.lower() == name.lower() and v not in (None, "") for k, v in data.items())


def _get(data: Any, name: str) -> Any:
    if not isinstance(data, dict):
        return None
    for key, value in data.items():
        if key.lower() == name.lower():
            return value
    return None


__all__ = ["PinnedCASession", "SalesforceSandbox"]
