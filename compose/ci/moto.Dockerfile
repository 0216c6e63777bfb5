# moto's server (SQS, S3) from PyPI, for CI, in place of motoserver/moto;
# the same port, 5000. Its wheels come from wheels/, downloaded on the host
# by scripts/containers (the build has no route to PyPI's TLS).
FROM docker.io/library/debian:bookworm-slim
COPY wheels/ /tmp/wheels/
RUN apt-get update && apt-get install -y --no-install-recommends python3-venv && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/moto \
 && /opt/moto/bin/pip install --no-index --find-links /tmp/wheels 'moto[server]==5.*' \
 && rm -rf /tmp/wheels
EXPOSE 5000
ENTRYPOINT ["/opt/moto/bin/moto_server", "-H", "0.0.0.0", "-p", "5000"]
