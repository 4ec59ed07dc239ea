"""boto3 (botocore's SigV4 signer, Python's OpenSSL) calling a local HTTPS endpoint.

The endpoint is not AWS, so the response does not parse: what matters is the request
on the wire. Prints "SENT" after the call was made.

usage: aws_client.py ENDPOINT ACCESS_KEY_ID SECRET_ACCESS_KEY [SESSION_TOKEN]
         (S3 ListObjectsV2, SigV4-signed)
       aws_client.py ENDPOINT --web-identity ROLE_ARN SESSION_NAME TOKEN
         (STS AssumeRoleWithWebIdentity: unsigned, the token in the form body)
"""
import sys
import warnings

import boto3
from botocore.config import Config


def client(service: str, endpoint: str, **credentials):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name="eu-west-1",
        verify=False,
        config=Config(retries={"max_attempts": 1}),
        **credentials,
    )


def main() -> None:
    warnings.filterwarnings("ignore")
    endpoint = sys.argv[1]
    try:
        if sys.argv[2] == "--web-identity":
            role_arn, session, token = sys.argv[3:6]
            sts = client("sts", endpoint)
            sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName=session, WebIdentityToken=token)
        else:
            key_id, secret = sys.argv[2], sys.argv[3]
            token = sys.argv[4] if len(sys.argv) > 4 else None
            s3 = client("s3", endpoint, aws_access_key_id=key_id, aws_secret_access_key=secret, aws_session_token=token)
            s3.list_objects_v2(Bucket="sigil-demo-bucket")
    except Exception:  # the fake endpoint's answer is not AWS XML
        pass
    print("SENT", flush=True)


if __name__ == "__main__":
    main()
