# sigil-agent image. Build from the repository root:
#   docker build -f deploy/docker/agent.Dockerfile -t sigil-agent .
#
# The build stage runs exactly what the test suite builds with (`cargo xtask build
# --release`): nightly rust-src, a bpf-linker matched to nightly's LLVM (cached under
# ~/.cache/sigil), the eBPF object, then the host binaries embedding it.
FROM rust:1.95-bookworm AS build
RUN rustup toolchain install nightly --profile minimal --component rust-src
WORKDIR /src
COPY . .
RUN cargo xtask build --release

# Runtime: glibc and CA certificates, nothing else. The agent runs as uid 0 with only the
# capabilities the DaemonSet grants (deploy/kubernetes/agent-daemonset.yaml), so the image
# itself sets no USER.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/sigil-agent /usr/local/bin/sigil-agent
ENTRYPOINT ["/usr/local/bin/sigil-agent"]
CMD ["run", "--kubernetes", "--stdout"]
