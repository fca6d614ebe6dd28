"""The CRM adapter: the :class:`~email_sync.crm.base.Crm` interface and its Salesforce implementation."""
