# The Kafka protocol from noida-db (PyPI), for CI: no Apache Kafka
# distribution can be had here. Its wheel comes from wheels/, downloaded on
# the host by scripts/containers (the build has no route to PyPI's TLS).
# noida-db advertises the address it binds, so it binds the service's own
# name (`--host kafka`).
FROM docker.io/library/debian:bookworm-slim
COPY wheels/noida_db-*.whl /tmp/
RUN apt-get update && apt-get install -y --no-install-recommends python3 && rm -rf /var/lib/apt/lists/* \
 && python3 -m zipfile -e /tmp/noida_db-*.whl /opt/noida && chmod +x /opt/noida/noida_db/noida-db \
 && rm /tmp/noida_db-*.whl && mkdir /data
EXPOSE 9092
ENTRYPOINT ["/opt/noida/noida_db/noida-db", "start", "--only", "kafka", "--data-dir", "/data", "--kafka-port", "9092"]
CMD ["--host", "kafka"]
