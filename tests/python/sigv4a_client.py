"""boto3 with awscrt signing a SigV4a request: S3 GetObject through a Multi-Region Access
Point, the request SigV4a exists for (ECDSA P-256, valid in a set of regions).

botocore sends MRAP requests to the global MRAP host whatever endpoint_url says, so the
signed request (its Host header still the MRAP host) is redirected to the local HTTPS
endpoint just before it is sent, as a DNS override would. Prints "SENT" after the call.

usage: sigv4a_client.py ENDPOINT ACCESS_KEY_ID SECRET_ACCESS_KEY REGION_SET
"""
import sys
import warnings
from urllib.parse import urlsplit

import boto3
from botocore.config import Config

MRAP = "arn:aws:s3::123456789012:accesspoint/mfzwi23gnjvgw.mrap"


def main() -> None:
    warnings.filterwarnings("ignore")
    endpoint, key_id, secret, region_set = sys.argv[1:5]
    s3 = boto3.client(
        "s3",
        region_name="eu-west-1",
        verify=False,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(sigv4a_signing_region_set=region_set, retries={"max_attempts": 1}),
    )

    def to_local(request, **_):
        url = urlsplit(request.url)
        request.url = endpoint + url.path + (f"?{url.query}" if url.query else "")

    s3.meta.events.register("before-send.s3", to_local)
    try:
        s3.get_object(Bucket=MRAP, Key="reports/2026.csv")
    except Exception:  # the local endpoint's answer is not S3 XML
        pass
    print("SENT", flush=True)


if __name__ == "__main__":
    main()
