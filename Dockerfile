# The switchboard image: the platform (`up`), the gateway, the queue worker,
# or one source as a sidecar (`connect SOURCE`), and the small watchdog for
# function images. Non-root, configured by /etc/switchboard/switchboard.yml
# (or SWITCHBOARD_CONFIG), data in /var/lib/switchboard/data.
#
#   docker build -t switchboard .                      compiles in a Rust image
#   podman build --build-arg BINARIES=prebuilt \
#     --build-arg PROFILE=release -t switchboard .     takes target/PROFILE/ as
#                                                      built here (where no Rust
#                                                      image can be pulled)
ARG BINARIES=build
ARG PROFILE=release

FROM docker.io/library/rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin switchboard --bin switchboard-watchdog \
 && mkdir /out && cp target/release/switchboard target/release/switchboard-watchdog /out/

FROM docker.io/library/debian:bookworm-slim AS prebuilt
ARG PROFILE
COPY target/${PROFILE}/switchboard target/${PROFILE}/switchboard-watchdog /out/

FROM ${BINARIES} AS binaries

FROM docker.io/library/debian:bookworm-slim
# ca-certificates: https:// gateways and AWS; curl: the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/switchboard --create-home switchboard
COPY --from=binaries /out/ /usr/local/bin/
COPY config/container.yml /etc/switchboard/switchboard.yml
ENV SWITCHBOARD_CONFIG=/etc/switchboard/switchboard.yml
USER switchboard
WORKDIR /var/lib/switchboard
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz
ENTRYPOINT ["switchboard"]
CMD ["up"]
