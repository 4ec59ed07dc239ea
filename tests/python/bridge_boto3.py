"""An unmodified boto3, configured only through environment variables and files
(AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE, or AWS_CONFIG_FILE with credential_process;
AWS_ENDPOINT_URL_* pointing at a local moto server). It gets temporary credentials from
STS on its own, then creates a bucket and puts an object.

Prints the credentials it ended up with (access key id, secret key, session token), one
per line, so the test knows which secrets must appear nowhere else.

usage: bridge_boto3.py BUCKET KEY
"""
import sys

import boto3


def main() -> None:
    bucket, key = sys.argv[1:3]
    session = boto3.session.Session()
    s3 = session.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key=key, Body=b"written with a Sigil token")
    creds = session.get_credentials().get_frozen_credentials()
    print(creds.access_key, creds.secret_key, creds.token, sep="\n", flush=True)


if __name__ == "__main__":
    main()
