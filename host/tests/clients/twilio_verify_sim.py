"""The official `twilio` client against portcullis-sim's new provider (Verify v2).

Usage: twilio_verify_sim.py SIM_URL SERVICE_SID TO (account SID and auth token in
TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN). Creates verifications by SMS and by call,
checks by `To` and by `VerificationSid`, fetches and cancels; prints what the client
saw as one JSON object.
"""

import json
import os
import sys
import urllib.parse
import urllib.request

from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client


class SimHttpClient(TwilioHttpClient):
    """Sends what the client would send to verify.twilio.com to the simulator."""

    def __init__(self, base):
        super().__init__()
        self.base = base

    def request(self, method, url, *args, **kwargs):
        url = url.replace("https://verify.twilio.com", self.base)
        return super().request(method, url, *args, **kwargs)


def last_code(base, to):
    query = urllib.parse.urlencode({"to": to})
    return json.load(urllib.request.urlopen(f"{base}/sim/inbox?{query}"))[-1]["code"]


def fields(v):
    return {
        "sid": v.sid, "account_sid": v.account_sid, "service_sid": v.service_sid,
        "to": v.to, "channel": v.channel, "status": v.status, "valid": v.valid,
        "date_created": v.date_created.isoformat() if v.date_created else None,
        "url": getattr(v, "url", None),
        "send_code_attempts": getattr(v, "send_code_attempts", None),
    }


def error(e):
    return {"status": e.status, "code": e.code}


def main():
    base, service_sid, to = sys.argv[1:4]
    client = Client(os.environ["TWILIO_ACCOUNT_SID"], os.environ["TWILIO_AUTH_TOKEN"],
                    http_client=SimHttpClient(base))
    service = client.verify.v2.services(service_sid)
    seen = {}

    # By SMS, checked by number: a wrong code keeps it pending, the right approves.
    sms = service.verifications.create(to=to, channel="sms")
    seen["sms"] = fields(sms)
    code = last_code(base, to)
    wrong = str((int(code) + 1) % 10 ** len(code)).zfill(len(code))
    seen["check_wrong_by_to"] = fields(service.verification_checks.create(to=to, code=wrong))
    seen["check_right_by_to"] = fields(service.verification_checks.create(to=to, code=code))
    try:
        service.verification_checks.create(to=to, code=code)
        seen["check_again"] = "approved twice"
    except TwilioRestException as e:
        seen["check_again"] = error(e)

    # By call, fetched, checked by its SID.
    call = service.verifications.create(to=to, channel="call")
    seen["call"] = fields(call)
    seen["fetched"] = fields(service.verifications(call.sid).fetch())
    code = last_code(base, to)
    seen["check_right_by_sid"] = fields(
        service.verification_checks.create(verification_sid=call.sid, code=code))

    # Canceled: its code no longer works, and it cannot be canceled twice.
    pending = service.verifications.create(to=to, channel="sms")
    code = last_code(base, to)
    seen["canceled"] = fields(service.verifications(pending.sid).update(status="canceled"))
    try:
        service.verification_checks.create(verification_sid=pending.sid, code=code)
        seen["check_canceled"] = "approved"
    except TwilioRestException as e:
        seen["check_canceled"] = error(e)
    try:
        service.verifications(pending.sid).update(status="canceled")
        seen["cancel_again"] = "canceled twice"
    except TwilioRestException as e:
        seen["cancel_again"] = error(e)

    json.dump(seen, sys.stdout, default=str)


if __name__ == "__main__":
    main()
