"""The staged batch keeps every MailItem field (email_sync.pipeline.staging): item kinds too."""

from __future__ import annotations

from datetime import UTC, datetime

from email_sync.pipeline.staging import read_mail, write_mail
from email_sync.rules.models import Address, AttachmentRef, MailItem


def test_item_class_auto_submitted_and_attachment_kind_survive_staging(tmp_path) -> None:
    items = [
        MailItem(item_id="i1", message_id="<m1@x>", folder="Inbox", sender=Address("a@x"),
                 received_at=datetime(2024, 5, 1, tzinfo=UTC), item_class="IPM.Schedule.Meeting.Request",
                 attachments=(AttachmentRef("a1", "C:\\x\\y.pdf", 10), AttachmentRef("a2", "Fwd", 99, kind="item"))),
        MailItem(item_id="i2", message_id="<m2@x>", folder="Inbox", auto_submitted="auto-replied"),
        MailItem(item_id="i3", message_id="", folder="Inbox"),
    ]
    path = tmp_path / "mail.parquet"
    assert write_mail(path, items) == 3
    assert list(read_mail(path)) == items
    assert [i.item_class for i in read_mail(path)] == ["IPM.Schedule.Meeting.Request", "IPM.Note", "IPM.Note"]
