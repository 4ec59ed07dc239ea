"""boto3 trading a web identity token for temporary credentials at a local STS
(AssumeRoleWithWebIdentity over TLS), printing the AccessKeyId and expiration it got:
proof that the response was a real STS response that boto3 parsed.

usage: sts_web_identity.py ENDPOINT ROLE_ARN SESSION_NAME TOKEN
"""
import sys
import warnings

import boto3
from botocore.config import Config


def main() -> None:
    warnings.filterwarnings("ignore")
    endpoint, role_arn, session, token = sys.argv[1:5]
    sts = boto3.client("sts", endpoint_url=endpoint, region_name="eu-west-1", verify=False, config=Config(retries={"max_attempts": 1}))
    creds = sts.assume_role_with_web_identity(RoleArn=role_arn, RoleSessionName=session, WebIdentityToken=token)["Credentials"]
    print(creds["AccessKeyId"], creds["Expiration"].isoformat(), flush=True)


if __name__ == "__main__":
    main()
