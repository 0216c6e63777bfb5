# The switchboard image: the platform (`up`), the gateway, the queue worker,
# or one source as a sidecar (`connect SOURCE`), and the small watchdog for
# function images; `--target functions` is the sample functions' image. Non-root, configured by /etc/switchboard/switchboard.yml
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
# Names the stage's leftover image, which a test's clean-up removes.
LABEL io.switchboard.stage=prebuilt
COPY target/${PROFILE}/switchboard target/${PROFILE}/switchboard-watchdog /out/

FROM ${BINARIES} AS binaries

# The sample functions' image (`--target functions`), the OpenFaaS pattern:
# the small watchdog as the entry point in front of the function's process
# (`fprocess`, set per function), as of-watchdog is in OpenFaaS templates.
FROM docker.io/library/debian:bookworm-slim AS functions
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pil python3-boto3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10002 --user-group --home-dir /home/app --create-home app
COPY --from=binaries /out/switchboard-watchdog /usr/local/bin/fwatchdog
COPY config/functions/ /home/app/functions/
USER app
WORKDIR /home/app
# http mode: fprocess is a server on 127.0.0.1:5000, proxied from 8080.
ENV mode=http upstream_url=http://127.0.0.1:5000 PORT=5000 fprocess="python3 functions/inbox.py"
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s CMD ["python3", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8080/_/health')"]
CMD ["fwatchdog"]

FROM docker.io/library/debian:bookworm-slim AS switchboard
# ca-certificates: https:// gateways and AWS; curl: the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/switchboard --create-home switchboard \
 && install -d -o switchboard -g switchboard /var/lib/switchboard/data
COPY --from=binaries /out/ /usr/local/bin/
COPY config/container.yml /etc/switchboard/switchboard.yml
ENV SWITCHBOARD_CONFIG=/etc/switchboard/switchboard.yml
USER switchboard
WORKDIR /var/lib/switchboard
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz
ENTRYPOINT ["switchboard"]
CMD ["up"]
