# authproxy container image: slim Python, non-root, configuration from a mounted file, secrets
# from mounted files (never baked into the image).
#
#   docker build -t authproxy .
#   docker run --rm -p 4180:4180 -p 9180:9180 \
#     -v "$PWD/authproxy.yaml:/etc/authproxy/authproxy.yaml:ro" \
#     -v "$PWD/secrets:/run/secrets/authproxy:ro" authproxy
#
# In the mounted authproxy.yaml: `listen: 0.0.0.0:4180` and `admin_listen: 0.0.0.0:9180` (reachable
# from outside the container), `client_secret_file: /run/secrets/authproxy/client_secret` and
# `secrets_file: /run/secrets/authproxy/session_secrets` instead of the secrets themselves.
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY authproxy ./authproxy
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    AUTHPROXY_CONFIG=/etc/authproxy/authproxy.yaml \
    AUTHPROXY_HEALTH_URL=http://127.0.0.1:9180/healthz
COPY --from=build /install /usr/local
RUN groupadd --system --gid 10001 authproxy \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin authproxy
USER 10001:10001
EXPOSE 4180 9180
# the admin listener's /healthz; set AUTHPROXY_HEALTH_URL when admin_listen uses another port
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['AUTHPROXY_HEALTH_URL'], timeout=2).status == 200 else 1)"]
# SIGTERM (docker stop, Kubernetes): stop accepting, drain in-flight requests, exit 0
STOPSIGNAL SIGTERM
ENTRYPOINT ["authproxy"]
CMD ["run"]
