"""libpq (psycopg2, psycopg 3) does its own TLS: connections that verify the server get an
``sslrootcert`` bundle of their own roots plus the mock CA; the others are left alone."""

import json

from conftest import run_json

CHILD = r"""
import json, sys
import psycopg2
from psycopg2.extensions import parse_dsn

seen = []
psycopg2._connect = lambda dsn, **kw: seen.append(parse_dsn(dsn))
cases = json.loads(sys.argv[1])
out = []
for dsn, kwargs in cases:
    seen.clear()
    psycopg2.connect(dsn, **kwargs)
    root = seen[0].get("sslrootcert")
    text = open(root).read() if root and root != "ORIG-MISSING" else None
    out.append({"root": root, "text": text})
print(json.dumps(out))
"""


def test_psycopg2_verifying_connections_trust_the_mock_ca(certs, tmp_path):
    orig = tmp_path / "orig-root.pem"
    orig.write_text(open(certs["other_ca"]).read())
    cases = [
        ["host=db sslmode=verify-full sslrootcert=%s" % orig, {}],
        ["host=db", {"sslmode": "verify-ca", "sslrootcert": str(orig)}],
        ["postgresql://db/x?sslmode=verify-full", {}],
        ["host=db sslmode=require", {}],
        ["host=db sslmode=disable sslrootcert=%s" % orig, {}],
    ]
    env = {"TIMETRACER_REPLAY": "1", "TIMETRACER_REPLAY_CA": certs["ca"], "HOME": str(tmp_path)}
    res, p = run_json(CHILD, env, args=[json.dumps(cases)])
    mock = open(certs["ca"]).read().strip()
    original = orig.read_text().strip()
    for r in res[:2]:
        assert r["root"] != str(orig) and mock in r["text"] and original in r["text"], r
    # verify-full without a root file: the mock CA alone (libpq would need one anyway).
    assert mock in res[2]["text"]
    # Nothing verified: untouched (a root file would turn `require` into `verify-ca`).
    assert res[3]["root"] is None
    assert res[4]["root"] == str(orig)
    assert "timetracer-hook" not in p.stderr
