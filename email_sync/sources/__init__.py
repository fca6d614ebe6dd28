"""I/O adapters that turn a mail system into MailItem batches (EWS now; Microsoft Graph next)."""
