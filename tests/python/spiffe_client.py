"""A SPIFFE workload using py-spiffe (a client this project did not write).

Fetches a JWT-SVID through the Workload API socket, validates it twice (locally against
the JWT bundle from FetchJWTBundles, and remotely through ValidateJWTSVID) and prints
what it learned as one JSON object.

usage: spiffe_client.py SOCKET AUDIENCE
"""
import json
import sys

from spiffe import JwtSvid, TrustDomain, WorkloadApiClient


def main() -> None:
    socket, audience = sys.argv[1], sys.argv[2]
    client = WorkloadApiClient(socket_path=f"unix://{socket}")
    try:
        svid = client.fetch_jwt_svid(audience={audience})
        bundles = client.fetch_jwt_bundles()
        bundle = bundles.get_bundle_for_trust_domain(TrustDomain(svid.spiffe_id.trust_domain.name))
        local = JwtSvid.parse_and_validate(svid.token, bundle, {audience})
        remote = client.validate_jwt_svid(svid.token, audience)
        print(json.dumps({
            "spiffe_id": str(svid.spiffe_id),
            "token": svid.token,
            "expiry": svid.expiry,
            "local_spiffe_id": str(local.spiffe_id),
            "remote_spiffe_id": str(remote.spiffe_id),
            "bundle_trust_domain": str(bundle.trust_domain.name),
            "bundle_keys": len(bundle.jwt_authorities),
        }))
    finally:
        client.close()


if __name__ == "__main__":
    main()
