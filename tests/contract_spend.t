#!/usr/bin/python3
"""contract_spend.t: the spend history through lighttpd: GET /spend/logs, /global/spend/report
and /user/daily/activity as LiteLLM answers them (spend_management_endpoints.py's
view_spend_logs and get_global_spend_report, common_daily_activity's
SpendAnalyticsPaginatedResponse), over usage reported at times the test sets
(KEYWARDEN_CLOCK_FILE): UTC hours and days, a report sent twice counted once, who reads whose
spend, and 64 reports at once all counted."""
import hashlib
import os
import sys
import tempfile
import threading
from datetime import datetime, timezone

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "lib"))
import tap  # noqa: E402
from kwserver import Server  # noqa: E402

DAY1 = int(datetime(2026, 3, 1, 10, 15, tzinfo=timezone.utc).timestamp())


def main():
    clock = os.path.join(tempfile.mkdtemp(prefix="kw-spend-"), "clock")

    def at(t):
        with open(clock, "w") as f:
            f.write(str(t))

    at(DAY1)
    with Server(env={"KEYWARDEN_CLOCK_FILE": clock}, workers=4) as srv:
        team = srv.admin("POST", "/team/new", body={"team_alias": "alpha"}).json
        alice = srv.admin("POST", "/user/new", body={"user_id": "alice", "user_role": "internal_user"}).json
        bob = srv.admin("POST", "/user/new", body={"user_id": "bob", "user_role": "internal_user"}).json
        ka = srv.admin("POST", "/key/generate", body={"user_id": "alice", "team_id": team["team_id"]}).json
        kb = srv.admin("POST", "/key/generate", body={"user_id": "bob"}).json

        def usage(key, cost, model="gpt-4o", tokens=10, **extra):
            r = srv.admin("POST", "/key/usage", body=dict(key=key, cost=cost, model=model, total_tokens=tokens, **extra))
            if r.status != 200:
                tap.bail("POST /key/usage: %r" % r)
            return r.json

        usage(ka["key"], 1.0)
        usage(ka["key"], 0.5, request_id="req-1")
        tap.ok(usage(ka["key"], 0.5, request_id="req-1")["duplicate"], "a report sent twice is a duplicate")
        at(DAY1 + 3600)                       # the next hour
        usage(ka["key"], 0.25, model="gpt-4o-mini")
        at(DAY1 + 86400)                      # the next day
        usage(kb["key"], 2.0, end_user="cust-1")

        rows = srv.admin("GET", "/spend/logs?summarize=false").json
        hours = sorted((r["startTime"], r["model"], r["spend"], r["api_requests"]) for r in rows)
        tap.eq(hours, [("2026-03-01T10:00:00Z", "gpt-4o", 1.5, 2),
                       ("2026-03-01T11:00:00Z", "gpt-4o-mini", 0.25, 1),
                       ("2026-03-02T10:00:00Z", "gpt-4o", 2.0, 1)],
               "hourly rows: the duplicate counted once, each hour its own row")
        tap.eq(rows[0]["startTime"], "2026-03-02T10:00:00Z", "rows come newest first")
        tap.ok(all(r["endTime"][11:13] == "%02d" % ((int(r["startTime"][11:13]) + 1) % 24) for r in rows),
               "a row's endTime is the end of its hour")
        hashes = {hashlib.sha256(k["key"].encode()).hexdigest() for k in (ka, kb)}
        tap.ok({r["api_key"] for r in rows} == hashes, "rows name keys by their hash")
        tap.ok(ka["key"] not in str(rows) and kb["key"] not in str(rows), "no plaintext key in the rows")

        at(DAY1 + 3 * 86400)                  # today is 2026-03-04
        days = srv.admin("GET", "/spend/logs?start_date=2026-03-01&end_date=2026-03-04").json
        tap.eq([d["startTime"] for d in days], ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"],
               "summarized: the days with spend, then each day to end_date")
        tap.eq((days[0]["spend"], days[0]["users"], days[0]["models"]),
               (1.75, {"alice": 1.75}, {"gpt-4o": 1.5, "gpt-4o-mini": 0.25}), "a day's spend per user and model")
        tap.eq(days[2], {"startTime": "2026-03-03", "spend": 0, "users": {}, "models": {}}, "a day without spend is zero")
        tap.eq(len(srv.admin("GET", "/spend/logs?start_date=2026-03-01&end_date=2099-12-31").json), 4,
               "the filled days stop at today")
        tap.eq(srv.admin("GET", "/spend/logs?start_date=2026-03-02&end_date=2026-03-02&summarize=false").json[0]["end_user"],
               "cust-1", "a range of one day, unsummarized, holds that day's rows")
        r = srv.admin("GET", "/spend/logs?start_date=2026-03-05&end_date=2026-03-01")
        tap.ok(r.status == 400 and r.json["error"]["param"] == "end_date", "end_date before start_date is a 400 naming it", r)

        # who reads whose spend
        mine = srv.request("GET", "/spend/logs?summarize=false&user_id=bob",
                           headers={"Authorization": "Bearer " + alice["key"]}).json
        tap.ok(mine and all(r["user"] == "alice" for r in mine), "an internal user reads only their own spend", mine)
        plain = srv.admin("POST", "/key/generate", body={}).json
        usage(plain["key"], 0.125)
        own = srv.request("GET", "/spend/logs", headers={"Authorization": "Bearer " + plain["key"]}).json
        tap.ok(len(own) == 1 and own[0]["spend"] == 0.125, "a key without a user reads its own spend", own)
        r = srv.request("GET", "/global/spend/report?start_date=2026-03-01&end_date=2026-03-02",
                        headers={"Authorization": "Bearer " + alice["key"]})
        tap.eq(r.status, 403, "the spend report is for admins")

        rep = srv.admin("GET", "/global/spend/report?start_date=2026-03-01&end_date=2026-03-02").json
        tap.eq([(d["group_by_day"], [(t["team_name"], t["total_spend"]) for t in d["teams"]]) for d in rep],
               [("2026-03-01", [("alpha", 1.75)]), ("2026-03-02", [("Unassigned Team", 2.0)])],
               "per day and team, by the team's alias")
        rep = srv.admin("GET", "/global/spend/report?start_date=2026-03-01&end_date=2026-03-02&group_by=customer").json
        tap.eq([[c["customer"] for c in d["customers"]] for d in rep], [[None], ["cust-1"]], "per day and customer")
        rep = srv.admin("GET", "/global/spend/report?start_date=2026-03-01&end_date=2026-03-02&group_by=api_key").json
        tap.eq([(k["total_cost"], sorted(m["model"] for m in k["model_details"])) for k in rep],
               [(2.0, ["gpt-4o"]), (1.75, ["gpt-4o", "gpt-4o-mini"])], "per key, most spent first, with its models")
        rep = srv.admin("GET", "/global/spend/report?start_date=2026-03-01&end_date=2026-03-02&internal_user_id=alice").json
        tap.eq(len(rep), 1, "internal_user_id narrows the report to one user's keys")

        act = srv.admin("GET", "/user/daily/activity?start_date=2026-03-01&end_date=2026-03-02&page_size=1").json
        tap.eq((act["results"][0]["date"], act["results"][0]["metrics"]["spend"], act["results"][0]["metrics"]["api_requests"]),
               ("2026-03-01", 1.75, 3), "daily activity: a day's metrics")
        tap.eq(sorted(act["results"][0]["breakdown"]["models"]), ["gpt-4o", "gpt-4o-mini"], "broken down by model")
        tap.eq((act["metadata"]["total_spend"], act["metadata"]["total_pages"], act["metadata"]["has_more"]),
               (3.75, 2, True), "totals over the range, a page of days")
        act = srv.request("GET", "/user/daily/activity?start_date=2026-03-01&end_date=2026-03-02",
                          headers={"Authorization": "Bearer " + bob["key"]}).json
        tap.eq(act["metadata"]["total_spend"], 2.0, "an internal user's daily activity is their own")

        # 64 reports at once: each one counted, in the same row
        at(DAY1 + 2 * 86400)
        errors = []

        def report(i):
            r = srv.admin("POST", "/key/usage", body={"key": kb["key"], "cost": 0.01, "model": "race",
                                                       "request_id": "race-%d" % i})
            if r.status != 200:
                errors.append(r)
        threads = [threading.Thread(target=report, args=(i,)) for i in range(64)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        race = [r for r in srv.admin("GET", "/spend/logs?summarize=false").json if r["model"] == "race"]
        tap.ok(not errors and len(race) == 1 and race[0]["api_requests"] == 64 and abs(race[0]["spend"] - 0.64) < 1e-9,
               "64 concurrent reports all count, in one row", {"errors": [repr(e) for e in errors[:3]], "race": race})


tap.run(main)
