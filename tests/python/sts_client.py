"""boto3 exchanging a web identity token at STS (AssumeRoleWithWebIdentity), as an
unmodified SDK does it: an unsigned form POST carrying the token in its body.

The endpoint is a local stand-in, so the answer does not parse: what matters is the
request on the wire. Prints "SENT" after the call was made.

usage: sts_client.py ENDPOINT ROLE_ARN SESSION_NAME TOKEN
"""
import sys
import warnings

import boto3
from botocore.config import Config


def main() -> None:
    endpoint, role_arn, session, token = sys.argv[1:5]
    warnings.filterwarnings("ignore")
    sts = boto3.client(
        "sts",
        endpoint_url=endpoint,
        region_name="eu-west-1",
        verify=False,
        config=Config(retries={"max_attempts": 1}),
    )
    try:
        sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName=session, WebIdentityToken=token)
    except Exception:  # the stand-in's answer is not STS XML
        pass
    print("SENT", flush=True)


if __name__ == "__main__":
    main()
