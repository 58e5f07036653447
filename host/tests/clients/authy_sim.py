"""The official `authy` client against portcullis-sim's old provider.

Usage: authy_sim.py SIM_URL USER_ID (the API key in AUTHY_API_KEY). Sends an SMS,
reads the code from the simulator's inbox, verifies a wrong and the right code, reads
the user's status and calls routes the simulator does not serve; prints what the
client saw as one JSON object.
"""

import json
import os
import sys
import urllib.parse
import urllib.request

from authy import AuthyFormatException
from authy.api import AuthyApiClient


def main():
    url, user_id = sys.argv[1], sys.argv[2]
    api = AuthyApiClient(os.environ["AUTHY_API_KEY"], api_uri=url)
    seen = {}

    sms = api.users.request_sms(user_id, {"force": True})
    seen["sms"] = {"ok": sms.ok(), "cellphone": sms["cellphone"]}

    status = api.users.status(user_id)
    seen["status"] = {"ok": status.ok(), "content": status.content}

    # The code as the phone received it.
    phone_inbox = json.load(urllib.request.urlopen(url + "/sim/inbox"))
    code = [m for m in phone_inbox if m["provider"] == "legacy-sms"][-1]["code"]
    wrong = str((int(code) + 1) % 10 ** len(code)).zfill(len(code))

    bad = api.tokens.verify(user_id, wrong)
    seen["wrong"] = {"ok": bad.ok(), "errors": bad.errors(), "content": bad.content,
                     "status": bad.response.status_code}
    good = api.tokens.verify(user_id, code)
    seen["right"] = {"ok": good.ok(), "content": good.content}

    # The client refuses a non-numeric id before sending anything.
    try:
        api.tokens.verify("authy-1", code)
        seen["non_numeric_id"] = "sent"
    except AuthyFormatException as e:
        seen["non_numeric_id"] = str(e)

    missing = api.users.status("999999999")
    seen["missing"] = {"ok": missing.ok(), "errors": missing.errors(),
                       "status": missing.response.status_code}

    # Routes the simulator does not implement answer the API's JSON error.
    unknown = {}
    call = api.users.request_call(user_id)
    unknown["request_call"] = {"status": call.response.status_code, "errors": call.errors(),
                               "error_code": call.content.get("error_code")}
    info = api.phones.info("201-555-0000", "1")
    unknown["phones_info"] = {"status": info.response.status_code, "errors": info.errors(),
                              "error_code": info.content.get("error_code")}
    seen["unknown"] = unknown

    json.dump(seen, sys.stdout)


if __name__ == "__main__":
    main()
