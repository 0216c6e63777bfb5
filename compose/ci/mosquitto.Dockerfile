# Mosquitto from Debian's package, for CI, in place of eclipse-mosquitto;
# the same paths for its config and data.
FROM docker.io/library/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends mosquitto mosquitto-clients && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /mosquitto/config /mosquitto/data && chown -R mosquitto:mosquitto /mosquitto
EXPOSE 1883
ENTRYPOINT ["mosquitto"]
CMD ["-c", "/mosquitto/config/mosquitto.conf"]
