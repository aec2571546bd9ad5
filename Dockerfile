# syntax=docker/dockerfile:1
# The gateway image: dependencies from the pinned runtime lock, installed in a build stage; the
# final stage holds only the virtualenv and runs as an unprivileged user.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/gateway && /opt/gateway/bin/pip install pip==25.3
COPY requirements.lock /src/requirements.lock
RUN /opt/gateway/bin/pip install -r /src/requirements.lock
COPY clients/python /src/clients/python
COPY service /src/service
RUN /opt/gateway/bin/pip install --no-deps /src/clients/python /src/service

FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin gateway \
  && mkdir /data && chown 10001:10001 /data
COPY --from=build /opt/gateway /opt/gateway
ENV PATH=/opt/gateway/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# The working directory holds what the gateway writes: the default SQLite usage ledger
# (var/ledger.db) and its spool. Mount a volume here to keep them across containers; a fleet
# points ledger.url at PostgreSQL instead.
WORKDIR /data
VOLUME ["/data"]
USER 10001
EXPOSE 50051 8080
# The standard gRPC health service, queried by the gateway's own client: no extra binary needed.
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 \
  CMD ["llm-gateway", "health", "--address", "127.0.0.1:50051"]
# SIGTERM drains in-flight calls for server.grace_period seconds, then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["llm-gateway"]
CMD ["serve"]
