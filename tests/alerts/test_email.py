"""alerts/channels/email.py against a real SMTP server (aiosmtpd): UTF-8, Message-ID, verdicts (docs/alerts.md#email)."""

from __future__ import annotations

import email
import email.policy

from alerts.channels import make_channel
from alerts.channels.email import EmailChannel
from alerts.route import parse_routes
from tests.alerts.standins import message, run, send_once, smtp_server


def test_email_over_real_smtp_in_utf8() -> None:
    ctl, box = smtp_server()
    try:
        ch = EmailChannel(host="127.0.0.1", port=ctl.port, sender="citywatch@example.org",
                          to=["duty@example.org", "command@example.org"], timeout_s=5)  # fmt: skip
        assert run(send_once(ch, message("mail-key"))).status == "delivered"
        (env,) = box.mails
        assert env.mail_from == "citywatch@example.org"
        assert env.rcpt_tos == ["duty@example.org", "command@example.org"]
        mail = email.message_from_bytes(env.original_content, policy=email.policy.default)
        assert mail["Subject"] == "【井盖缺失或破损·新案件】花园路井盖缺失 / Manhole: new case"
        assert mail["Message-ID"] == "<mail-key@citywatch>"
        assert mail.get_content_charset() == "utf-8"
        assert mail.get_content().startswith("花园路井盖缺失")
    finally:
        ctl.stop()
    res = run(send_once(EmailChannel(host="127.0.0.1", port=ctl.port, sender="a@b.c", to=["d@e.f"], timeout_s=1),
                        message()))  # fmt: skip
    assert res.status == "retry"  # the server is gone: try later


def test_email_entry_of_the_routing_file() -> None:
    cfg = parse_routes("receivers:\n  - name: m\n    email: {host: smtp.example.org, from: cw@example.org, to: duty@example.org,"
                       " username: cw, password: 0123}\nroute: {receiver: m}\n")  # fmt: skip
    (spec,) = cfg.receivers["m"].channels
    assert spec.options == {"host": "smtp.example.org", "port": 25, "from": "cw@example.org", "to": ["duty@example.org"],
                            "username": "cw", "password": "0123", "starttls": False, "ssl": False, "timeout": None}  # fmt: skip
    assert spec.target == "email:smtp.example.org:25:duty@example.org"
    assert "0123" not in repr(spec)  # the password, as written (not YAML's octal 83)
    ch = make_channel(spec)
    assert isinstance(ch, EmailChannel) and (ch.sender, ch.to, ch.port, ch.password) == (
        "cw@example.org",
        ["duty@example.org"],
        25,
        "0123",
    )
