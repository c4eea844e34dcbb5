"""boto3 against an S3 server (issue 26 item 5): `GET /object/KEY` calls `head_object` and
`get_object` and answers what botocore parsed from each. botocore reads `ContentLength` from
the HEAD response's Content-Length header (a KeyError without it), so a replay whose HTTP mock
drops that header fails this request.

Environment: S3_ENDPOINT (http://127.0.0.1:PORT), S3_BUCKET, AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_REGION.
"""

import hashlib
import os

import boto3
from botocore.config import Config
from fastapi import FastAPI

BUCKET = os.environ["S3_BUCKET"]
s3 = boto3.client(
    "s3",
    endpoint_url=os.environ["S3_ENDPOINT"],
    config=Config(
        retries={"max_attempts": 1, "mode": "standard"},
        s3={"addressing_style": "path"},
    ),
)
app = FastAPI()


@app.get("/object/{key}")
def get_object(key: str):
    head = s3.head_object(Bucket=BUCKET, Key=key)
    got = s3.get_object(Bucket=BUCKET, Key=key)
    body = got["Body"].read()
    return {
        "key": key,
        "head_content_length": head["ContentLength"],
        "head_etag": head["ETag"],
        "get_content_length": got["ContentLength"],
        "sha256": hashlib.sha256(body).hexdigest(),
    }
