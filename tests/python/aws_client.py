"""boto3 (botocore's SigV4 signer, Python's OpenSSL) calling a local HTTPS endpoint.

The endpoint is not AWS, so the response does not parse: what matters is the signed
request on the wire. Prints "SENT" after the call was made.

usage: aws_client.py ENDPOINT ACCESS_KEY_ID SECRET_ACCESS_KEY [SESSION_TOKEN]
"""
import sys
import warnings

import boto3
from botocore.config import Config


def main() -> None:
    endpoint, key_id, secret = sys.argv[1], sys.argv[2], sys.argv[3]
    token = sys.argv[4] if len(sys.argv) > 4 else None
    warnings.filterwarnings("ignore")
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        aws_session_token=token,
        verify=False,
        config=Config(retries={"max_attempts": 1}),
    )
    try:
        s3.list_objects_v2(Bucket="sigil-demo-bucket")
    except Exception:  # the fake endpoint's answer is not S3 XML
        pass
    print("SENT", flush=True)


if __name__ == "__main__":
    main()
