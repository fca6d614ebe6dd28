"""Field metadata of the sandbox org: what ``describe`` returns and what validation enforces.

Only the objects and fields the email sync touches are modelled, with Salesforce's real
names, types and lengths (Task.Subject 255, Task.Description 32,000, Contact.Email 80 ...).
The org settings decide the optional parts: the ``Email_Sync_Key__c`` external id on Task,
the alternate email fields on Contact/Lead, the Task.Type picklist values, and whether
TaskRelation/TaskWhoRelation exist (Shared Activities).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STRING_TYPES = frozenset({"string", "textarea", "email", "phone", "url", "picklist", "combobox",
                          "multipicklist"})
ID_TYPES = frozenset({"id", "reference"})

_SOAP_TYPES = {
    "id": "tns:ID", "reference": "tns:ID", "string": "xsd:string", "textarea": "xsd:string",
    "email": "xsd:string", "phone": "xsd:string", "url": "xsd:string", "picklist": "xsd:string",
    "combobox": "xsd:string", "multipicklist": "xsd:string", "boolean": "xsd:boolean",
    "date": "xsd:date", "datetime": "xsd:dateTime", "int": "xsd:int", "double": "xsd:double",
    "base64": "xsd:base64Binary",
}

# Key prefixes (first three characters of every record Id) as Salesforce assigns them.
KEY_PREFIXES = {
    "Account": "001",
    "Contact": "003",
    "User": "005",
    "Organization": "00D",
    "Lead": "00Q",
    "Task": "00T",
    "ContentVersion": "068",
    "ContentDocument": "069",
    "ContentDocumentLink": "06A",
    "TaskRelation": "0RT",
    "TaskWhoRelation": "0RT",
    "BulkJob": "750",
    "QueryLocator": "01g",
}

# The "Name" pseudo-object behind polymorphic lookups (Task.Who, Task.What, Task.Owner, ...).
NAME_FIELDS = {
    "Id": "id", "Name": "string", "FirstName": "string", "LastName": "string", "Email": "email",
    "Title": "string", "Phone": "phone", "Type": "string", "Username": "string", "Alias": "string",
    "IsActive": "boolean",
}


@dataclass
class FieldDef:
    name: str
    type: str
    label: str = ""
    length: int = 0
    nillable: bool = True
    createable: bool = True
    updateable: bool = True
    defaulted_on_create: bool = False
    default_value: Any = None
    picklist: list[str] | None = None
    restricted_picklist: bool = False
    reference_to: list[str] = field(default_factory=list)
    relationship_name: str | None = None
    external_id: bool = False
    unique: bool = False
    case_sensitive: bool = False
    custom: bool = False
    filterable: bool = True
    sortable: bool = True
    name_field: bool = False
    calculated: bool = False
    id_lookup: bool = False
    precision: int = 0
    scale: int = 0

    @property
    def is_string(self) -> bool:
        return self.type in STRING_TYPES

    @property
    def is_id(self) -> bool:
        return self.type in ID_TYPES

    @property
    def polymorphic(self) -> bool:
        return len(self.reference_to) > 1

    @property
    def byte_length(self) -> int:
        if self.type in STRING_TYPES:
            return self.length * 3
        if self.type in ID_TYPES:
            return 18
        return 0

    def describe(self) -> dict[str, Any]:
        picklist_values = [
            {"active": True, "defaultValue": value == self.default_value, "label": value, "validFor": None,
             "value": value}
            for value in (self.picklist or [])
        ]
        return {
            "aggregatable": self.type not in ("textarea", "base64") or self.length <= 255,
            "autoNumber": False,
            "byteLength": self.byte_length,
            "calculated": self.calculated,
            "calculatedFormula": None,
            "cascadeDelete": False,
            "caseSensitive": self.case_sensitive,
            "compoundFieldName": None,
            "controllerName": None,
            "createable": self.createable,
            "custom": self.custom,
            "defaultValue": self.default_value if self.defaulted_on_create else None,
            "defaultValueFormula": None,
            "defaultedOnCreate": self.defaulted_on_create,
            "dependentPicklist": False,
            "deprecatedAndHidden": False,
            "digits": 0,
            "encrypted": False,
            "externalId": self.external_id,
            "extraTypeInfo": "plaintextarea" if self.type == "textarea" else None,
            "filterable": self.filterable,
            "groupable": self.filterable and self.type not in ("double", "datetime"),
            "htmlFormatted": False,
            "idLookup": self.id_lookup or self.type == "id",
            "inlineHelpText": None,
            "label": self.label or self.name,
            "length": self.length,
            "name": self.name,
            "nameField": self.name_field,
            "namePointing": self.polymorphic,
            "nillable": self.nillable,
            "permissionable": self.custom,
            "picklistValues": picklist_values,
            "polymorphicForeignKey": self.polymorphic,
            "precision": self.precision,
            "referenceTargetField": None,
            "referenceTo": list(self.reference_to),
            "relationshipName": self.relationship_name,
            "relationshipOrder": None,
            "restrictedDelete": False,
            "restrictedPicklist": self.restricted_picklist,
            "scale": self.scale,
            "soapType": _SOAP_TYPES.get(self.type, "xsd:anyType"),
            "sortable": self.sortable,
            "type": self.type,
            "unique": self.unique,
            "updateable": self.updateable,
        }


@dataclass
class ObjectDef:
    name: str
    label: str
    label_plural: str
    fields: dict[str, FieldDef]
    createable: bool = True
    updateable: bool = True
    deletable: bool = True
    queryable: bool = True
    custom: bool = False

    def __post_init__(self) -> None:
        self._lower = {name.lower(): f for name, f in self.fields.items()}
        self.defaults = {f.name: f.default_value for f in self.fields.values()
                         if f.defaulted_on_create and f.default_value is not None and f.createable}
        self.picklists = frozenset(f.name for f in self.fields.values() if f.picklist is not None)
        self.required = [f.name for f in self.fields.values()
                         if not f.nillable and f.createable and not f.defaulted_on_create]
        self._relationships: dict[str, FieldDef] = {}
        for f in self.fields.values():
            if f.relationship_name:
                self._relationships[f.relationship_name.lower()] = f

    @property
    def key_prefix(self) -> str:
        return KEY_PREFIXES[self.name]

    def field(self, name: str) -> FieldDef | None:
        return self._lower.get(name.lower())

    def relationship(self, name: str) -> FieldDef | None:
        return self._relationships.get(name.lower())

    def urls(self, version: str) -> dict[str, str]:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {"compactLayouts": f"{base}/describe/compactLayouts", "rowTemplate": f"{base}/{{ID}}",
                "defaultValues": f"{base}/defaultValues?recordTypeId&fields", "describe": f"{base}/describe",
                "sobject": base}

    def global_entry(self, version: str) -> dict[str, Any]:
        return {
            "activateable": False, "createable": self.createable, "custom": self.custom,
            "customSetting": False, "deepCloneable": False, "deletable": self.deletable,
            "deprecatedAndHidden": False, "feedEnabled": False, "hasSubtypes": False, "isInterface": False,
            "isSubtype": False, "keyPrefix": self.key_prefix, "label": self.label,
            "labelPlural": self.label_plural, "layoutable": self.createable, "mergeable": False,
            "mruEnabled": self.createable, "name": self.name, "queryable": self.queryable,
            "replicateable": True, "retrieveable": True, "searchable": self.createable,
            "triggerable": self.createable, "undeletable": self.deletable, "updateable": self.updateable,
            "urls": self.urls(version),
        }

    def describe(self, version: str) -> dict[str, Any]:
        data = self.global_entry(version)
        data.update({
            "actionOverrides": [], "childRelationships": [], "compactLayoutable": self.createable,
            "fields": [f.describe() for f in self.fields.values()], "listviewable": None,
            "lookupLayoutable": None, "namedLayoutInfos": [], "networkScopeFieldName": None,
            "recordTypeInfos": [], "searchLayoutable": self.createable, "supportedScopes": [],
            "sobjectDescribeOption": "FULL",
        })
        return data


# -- field helpers ---------------------------------------------------------------------
def _id() -> FieldDef:
    return FieldDef("Id", "id", "Record ID", length=18, nillable=False, createable=False, updateable=False,
                    defaulted_on_create=True)


def _s(name: str, length: int, label: str = "", **kw: Any) -> FieldDef:
    return FieldDef(name, kw.pop("type", "string"), label or name, length=length, **kw)


def _ref(name: str, to: list[str], rel: str | None, label: str = "", **kw: Any) -> FieldDef:
    return FieldDef(name, "reference", label or name, length=18, reference_to=to, relationship_name=rel, **kw)


def _bool(name: str, default: bool = False, label: str = "", **kw: Any) -> FieldDef:
    return FieldDef(name, "boolean", label or name, nillable=False, defaulted_on_create=True,
                    default_value=default, **kw)


def _pick(name: str, values: list[str], length: int = 40, default: str | None = None, restricted: bool = True,
          **kw: Any) -> FieldDef:
    return FieldDef(name, kw.pop("type", "picklist"), kw.pop("label", name), length=length, picklist=values,
                    restricted_picklist=restricted, default_value=default, defaulted_on_create=default is not None,
                    **kw)


def _audit() -> list[FieldDef]:
    ro = {"createable": False, "updateable": False}
    return [
        _bool("IsDeleted", False, "Deleted", **ro),
        FieldDef("CreatedDate", "datetime", "Created Date", nillable=False, defaulted_on_create=True, **ro),
        _ref("CreatedById", ["User"], "CreatedBy", "Created By ID", nillable=False, defaulted_on_create=True, **ro),
        FieldDef("LastModifiedDate", "datetime", "Last Modified Date", nillable=False, defaulted_on_create=True,
                 **ro),
        _ref("LastModifiedById", ["User"], "LastModifiedBy", "Last Modified By ID", nillable=False,
             defaulted_on_create=True, **ro),
        FieldDef("SystemModstamp", "datetime", "System Modstamp", nillable=False, defaulted_on_create=True, **ro),
    ]


def _obj(name: str, label: str, plural: str, fields: list[FieldDef], **kw: Any) -> ObjectDef:
    return ObjectDef(name, label, plural, {f.name: f for f in fields}, **kw)


TASK_STATUSES = ["Not Started", "In Progress", "Completed", "Waiting on someone else", "Deferred"]
TASK_CLOSED_STATUSES = frozenset({"Completed"})
TASK_PRIORITIES = ["High", "Normal", "Low"]
TASK_SUBTYPES = ["Task", "Email", "ListEmail", "Cadence", "Call", "LinkedIn"]
DEFAULT_TASK_TYPES = ["Call", "Email", "Meeting", "Other"]
LEAD_STATUSES = ["Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted"]
TIME_ZONES = ["America/Los_Angeles", "America/Denver", "America/Chicago", "America/New_York", "Europe/London",
              "Europe/Berlin", "Europe/Paris", "Asia/Tokyo", "Australia/Sydney", "UTC", "GMT"]
WHAT_TARGETS = ["Account", "Asset", "Campaign", "Case", "Contract", "Opportunity", "Order", "Product2",
                "Solution"]


def build_schema(*, has_external_id_field: bool = True, alternate_email_fields: list[str] | None = None,
                 task_types: list[str] | None = None, shared_activities: bool = True,
                 external_id_case_sensitive: bool = False,
                 time_zones: list[str] | None = None) -> dict[str, ObjectDef]:
    """Build the org's object definitions for the given settings."""
    alt_fields = list(alternate_email_fields if alternate_email_fields is not None else ["Secondary_Email__c"])
    zones = sorted(set(TIME_ZONES) | set(time_zones or []))

    def alt_email_defs() -> list[FieldDef]:
        return [_s(name, 80, name.removesuffix("__c").replace("_", " "), type="email", custom=name.endswith("__c"))
                for name in alt_fields]

    owner = {"nillable": False, "defaulted_on_create": True}
    schema: list[ObjectDef] = [
        _obj("Organization", "Organization", "Organizations", [
            _id(), _s("Name", 80, "Name", name_field=True), _bool("IsSandbox", True, "Is Sandbox"),
            _pick("TimeZoneSidKey", zones, label="Default Time Zone", restricted=False),
            _s("OrganizationType", 40, "Edition"), _s("InstanceName", 5, "Instance Name"),
            _s("LanguageLocaleKey", 40, "Language"), *_audit(),
        ], createable=False, updateable=False, deletable=False),
        _obj("User", "User", "Users", [
            _id(), _s("Username", 80, "Username", nillable=False, unique=True, id_lookup=True),
            _s("LastName", 80, "Last Name", nillable=False), _s("FirstName", 40, "First Name"),
            _s("Name", 121, "Full Name", createable=False, updateable=False, name_field=True, calculated=True),
            _s("Alias", 8, "Alias"), _s("Email", 128, "Email", type="email", nillable=False),
            _pick("TimeZoneSidKey", zones, label="Time Zone", default="America/Los_Angeles", restricted=False),
            _bool("IsActive", True, "Active"), _s("Title", 80, "Title"), _s("Phone", 40, "Phone", type="phone"),
            *_audit(),
        ]),
        _obj("Account", "Account", "Accounts", [
            _id(), _s("Name", 255, "Account Name", nillable=False, name_field=True),
            _s("Website", 255, "Website", type="url"), _ref("OwnerId", ["User"], "Owner", "Owner ID", **owner),
            *_audit(),
        ]),
        _obj("Contact", "Contact", "Contacts", [
            _id(), _ref("AccountId", ["Account"], "Account", "Account ID"),
            _s("LastName", 80, "Last Name", nillable=False), _s("FirstName", 40, "First Name"),
            _s("Name", 121, "Full Name", createable=False, updateable=False, name_field=True, calculated=True),
            _s("Title", 128, "Title"), _s("Phone", 40, "Business Phone", type="phone"),
            _s("Email", 80, "Email", type="email", id_lookup=True), *alt_email_defs(),
            _bool("HasOptedOutOfEmail", False, "Email Opt Out"),
            _ref("OwnerId", ["User"], "Owner", "Owner ID", **owner), *_audit(),
        ]),
        _obj("Lead", "Lead", "Leads", [
            _id(), _s("LastName", 80, "Last Name", nillable=False), _s("FirstName", 40, "First Name"),
            _s("Name", 121, "Full Name", createable=False, updateable=False, name_field=True, calculated=True),
            _s("Title", 128, "Title"), _s("Company", 255, "Company", nillable=False),
            _s("Phone", 40, "Phone", type="phone"), _s("Email", 80, "Email", type="email", id_lookup=True),
            *alt_email_defs(), _pick("Status", LEAD_STATUSES, default="Open - Not Contacted", label="Lead Status",
                                     nillable=False),
            _bool("IsConverted", False, "Converted"),
            _ref("ConvertedContactId", ["Contact"], "ConvertedContact", "Converted Contact ID", createable=False,
                 updateable=False),
            _ref("OwnerId", ["User", "Group"], "Owner", "Owner ID", **owner), *_audit(),
        ]),
        _obj("Task", "Task", "Tasks", [
            _id(), _ref("WhoId", ["Contact", "Lead"], "Who", "Name ID"),
            _ref("WhatId", list(WHAT_TARGETS), "What", "Related To ID"),
            _pick("Subject", ["Call", "Send Letter", "Send Quote", "Other"], length=255, restricted=False,
                  type="combobox", label="Subject"),
            FieldDef("ActivityDate", "date", "Due Date Only"),
            _pick("Status", TASK_STATUSES, default="Not Started", nillable=False),
            _pick("Priority", TASK_PRIORITIES, default="Normal", nillable=False),
            _bool("IsHighPriority", False, "High Priority", createable=False, updateable=False),
            _ref("OwnerId", ["User", "Group"], "Owner", "Assigned To ID", **owner),
            FieldDef("Description", "textarea", "Description", length=32000, filterable=False, sortable=False),
            _pick("Type", list(task_types or DEFAULT_TASK_TYPES), label="Type"),
            _ref("AccountId", ["Account"], "Account", "Account ID", createable=False, updateable=False),
            _bool("IsClosed", False, "Closed", createable=False, updateable=False),
            FieldDef("WhoCount", "int", "Relation Count", createable=False, updateable=False, precision=9),
            FieldDef("WhatCount", "int", "Related To Count", createable=False, updateable=False, precision=9),
            _pick("TaskSubtype", TASK_SUBTYPES, label="Task Subtype", updateable=False),
            _bool("IsArchived", False, "Archived", createable=False, updateable=False),
            *_audit(),
        ]),
        _obj("ContentVersion", "Content Version", "Content Versions", [
            _id(), _ref("ContentDocumentId", ["ContentDocument"], "ContentDocument", "ContentDocument ID",
                        updateable=False),
            _bool("IsLatest", True, "Is Latest", createable=False, updateable=False),
            FieldDef("VersionData", "base64", "Version Data", nillable=True, updateable=False, filterable=False,
                     sortable=False),
            _s("Title", 255, "Title", nillable=False, name_field=True, defaulted_on_create=True),
            FieldDef("Description", "textarea", "Description", length=1000, filterable=False, sortable=False),
            _s("PathOnClient", 500, "Path On Client", updateable=False),
            _s("ReasonForChange", 1000, "Reason For Change"),
            _pick("ContentLocation", ["S", "E", "L"], length=40, default="S", label="Content Location",
                  updateable=False),
            _s("VersionNumber", 20, "Version Number", createable=False, updateable=False),
            FieldDef("ContentSize", "int", "Size", createable=False, updateable=False, precision=9),
            _s("FileType", 20, "File Type", createable=False, updateable=False),
            _s("FileExtension", 40, "File Extension", createable=False, updateable=False),
            _s("Checksum", 50, "Checksum", createable=False, updateable=False),
            _ref("FirstPublishLocationId", ["Account", "Contact", "Lead", "Task", "User"], "FirstPublishLocation",
                 "First Publish Location ID", updateable=False),
            _ref("OwnerId", ["User"], "Owner", "Owner ID", **owner), *_audit(),
        ]),
        _obj("ContentDocument", "Content Document", "Content Documents", [
            _id(), _s("Title", 255, "Title", name_field=True),
            _ref("LatestPublishedVersionId", ["ContentVersion"], "LatestPublishedVersion",
                 "Latest Published Version ID", createable=False, updateable=False),
            FieldDef("ContentSize", "int", "Size", createable=False, updateable=False, precision=9),
            _s("FileType", 20, "File Type", createable=False, updateable=False),
            _s("FileExtension", 40, "File Extension", createable=False, updateable=False),
            _ref("OwnerId", ["User"], "Owner", "Owner ID", **owner), *_audit(),
        ], createable=False),
        _obj("ContentDocumentLink", "Content Document Link", "Content Document Links", [
            _id(), _ref("LinkedEntityId", ["Account", "Contact", "Lead", "Task", "User"], "LinkedEntity",
                        "Linked Entity ID", nillable=False, updateable=False),
            _ref("ContentDocumentId", ["ContentDocument"], "ContentDocument", "ContentDocument ID",
                 nillable=False, updateable=False),
            _bool("IsDeleted", False, "Deleted", createable=False, updateable=False),
            FieldDef("SystemModstamp", "datetime", "System Modstamp", nillable=False, createable=False,
                     updateable=False, defaulted_on_create=True),
            _pick("ShareType", ["V", "C", "I"], default="V", label="Share Type", nillable=False),
            _pick("Visibility", ["AllUsers", "InternalUsers", "SharedUsers"], default="AllUsers", label="Visibility"),
        ]),
    ]
    if shared_activities:
        schema += [
            _obj("TaskRelation", "Task Relation", "Task Relations", [
                _id(), _ref("RelationId", ["Contact", "Lead", "Account"] + WHAT_TARGETS[1:], "Relation",
                            "Relation ID", nillable=False, updateable=False),
                _ref("TaskId", ["Task"], "Task", "Task ID", nillable=False, updateable=False),
                _bool("IsWhat", False, "Is What", updateable=False),
                _ref("AccountId", ["Account"], "Account", "Account ID", createable=False, updateable=False),
                *_audit(),
            ], updateable=False),
            _obj("TaskWhoRelation", "Task Who Relation", "Task Who Relations", [
                _id(), _ref("RelationId", ["Contact", "Lead"], "Relation", "Relation ID", createable=False,
                            updateable=False),
                _ref("TaskId", ["Task"], "Task", "Task ID", createable=False, updateable=False),
                _s("Type", 255, "Type", createable=False, updateable=False),
                _ref("AccountId", ["Account"], "Account", "Account ID", createable=False, updateable=False),
                *_audit(),
            ], createable=False, updateable=False, deletable=False),
        ]
    objects = {o.name: o for o in schema}
    if has_external_id_field:
        task = objects["Task"]
        task.fields["Email_Sync_Key__c"] = FieldDef(
            "Email_Sync_Key__c", "string", "Email Sync Key", length=255, external_id=True, unique=True,
            case_sensitive=external_id_case_sensitive, custom=True, id_lookup=True)
        task.__post_init__()
    return objects
