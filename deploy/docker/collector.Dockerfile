# sigil-collector image (with the `sigil` query CLI). Build from the repository root:
#   docker build -f deploy/docker/collector.Dockerfile -t sigil-collector .
#
# The same build as the test suite's (`cargo xtask build --release`), so the collector
# is the binary the tests exercised; the eBPF toolchain it provisions only serves the agent.
FROM rust:1.95-bookworm AS build
RUN rustup toolchain install nightly --profile minimal --component rust-src
WORKDIR /src
COPY . .
RUN cargo xtask build --release

# Runtime: distroless (glibc, CA certificates, no shell), non-root uid 65532, the same
# uid the Deployment's securityContext names.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/sigil-collector /usr/local/bin/sigil-collector
COPY --from=build /src/target/release/sigil /usr/local/bin/sigil
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/sigil-collector"]
CMD ["serve"]
