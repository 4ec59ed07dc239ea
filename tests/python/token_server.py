"""A token endpoint over TLS that hands out planted credentials, as AWS STS and an
OAuth2 authorization server answer: an AssumeRoleWithWebIdentity POST (form body with
Action=...) gets STS's XML response; any other POST gets an OAuth2 token response in
JSON. Prints "READY <port>" once listening.

usage: token_server.py PORT CERT KEY ACCESS_KEY_ID SECRET_ACCESS_KEY SESSION_TOKEN ACCESS_TOKEN MODE
  MODE: "length" (Content-Length), or "chunked-gzip" (gzip, chunked transfer coding,
        written in several pieces)
"""
import gzip
import http.server
import sys
import urllib.parse
from datetime import datetime, timedelta, timezone

from http_server import serve

KEY_ID, SECRET, SESSION, ACCESS_TOKEN, MODE = sys.argv[4:9]


def sts_xml(role_arn: str, session: str) -> bytes:
    expires = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    account = role_arn.split(":")[4] if role_arn.count(":") >= 5 else "123456789012"
    role = role_arn.rsplit("/", 1)[-1]
    return f"""<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ns:reporting</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser>
      <Arn>arn:aws:sts::{account}:assumed-role/{role}/{session}</Arn>
      <AssumedRoleId>AROA3XFRBF535PLBIFPI4:{session}</AssumedRoleId>
    </AssumedRoleUser>
    <Credentials>
      <SessionToken>{SESSION}</SessionToken>
      <SecretAccessKey>{SECRET}</SecretAccessKey>
      <Expiration>{expires}</Expiration>
      <AccessKeyId>{KEY_ID}</AccessKeyId>
    </Credentials>
    <Provider>sigil.test</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata>
    <RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId>
  </ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>
""".encode()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        if form.get("Action") == ["AssumeRoleWithWebIdentity"]:
            body, ctype = sts_xml(form["RoleArn"][0], form["RoleSessionName"][0]), "text/xml"
        else:
            body = (
                '{"access_token":"%s","token_type":"Bearer","expires_in":3600,'
                '"scope":"read:reports","refresh_token":"%s-refresh"}' % (ACCESS_TOKEN, ACCESS_TOKEN)
            ).encode()
            ctype = "application/json"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        if MODE == "chunked-gzip":
            packed = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            step = max(1, len(packed) // 3)
            for i in range(0, len(packed), step):
                piece = packed[i : i + step]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        else:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def main() -> None:
    serve(int(sys.argv[1]), Handler, sys.argv[2], sys.argv[3])


if __name__ == "__main__":
    main()
