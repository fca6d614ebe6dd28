"""Mail sources: the :class:`~email_sync.sources.base.MailSource` interface and its implementations (EWS)."""
